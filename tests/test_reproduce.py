"""`lmc reproduce` / `lmc report`: grids, bad input, tables, and tiny real sweeps on real digits."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lmc import paths

TINY = """
artefact = "tiny"
title = "tiny Table 2"
layout = "table2"
axes = ["columns"]

[base]
model = "mlp"
dataset = "mnist_small"
width = 16
batch_size = 64


[scales.quick]
notes = "two epochs on 600 real digits"
config = {{ epochs = 2 }}

[scales.paper]
notes = "three epochs"
config = {{ epochs = 3 }}

[[columns]]
label = "ADAM ↑lr"
optimizer = "adam"
lr = 0.005
{extra}
"""


def tiny_grid(tmp_path: Path, extra: str = "", name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.format(extra=extra))
    return path


def lmc(*argv: str, env_root: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_root is not None:
        env["LMC_RESULTS"] = str(env_root)
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture
def fresh_root(tmp_path, mnist_small):
    """A results root of its own (nothing cached) holding the 600/200-digit betons."""
    root = tmp_path / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    return root


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory, mnist_small):
    """One results root shared by the sweep tests below: the first trains, the next reuse its runs."""
    root = tmp_path_factory.mktemp("sweep") / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    tiny_grid(root.parent)
    return root


# -- grids -------------------------------------------------------------------------------------

def test_every_grid_loads_at_both_scales_and_matches_the_papers_labels():
    from analysis import paper
    from experiments.grids import ARTEFACTS, load_grid

    for name in ARTEFACTS:
        for scale in ("paper", "quick"):
            grid = load_grid(name, scale)
            assert grid.notes, f"{name}/{scale} documents its settings"
            assert grid.kind == "counts" or grid.cells
    t1 = load_grid("table1", "paper")
    assert len(t1.cells) == 24 and {c.config.epochs for c in t1.cells} == {200}
    for cell in t1.cells:  # every label has the paper's number (None = the paper's "unstable")
        labels = dict(cell.labels)
        paper.table1_cell(labels["rows"], labels["columns"], "test")
    quick = load_grid("table1", "quick")
    # Quick batch sizes per optimiser (table1.toml explains why): SGD keeps the paper's, ADAM's 1024 -> 128.
    batches = {(dict(c.labels)["rows"].split("BS=")[1], c.config.optimizer): c.config.batch_size for c in quick.cells}
    assert batches == {("30K", "sgd"): 30000, ("30K", "adam"): 30000, ("1024", "sgd"): 1024, ("1024", "adam"): 128}
    # The acceptance: Tables 1 and 2 at the quick scale run on full MNIST.
    assert quick.datasets() == ["mnist"] and {c.config.epochs for c in quick.cells} == {20, 40}
    t2 = load_grid("table2", "quick")
    assert t2.datasets() == ["mnist"] and {c.config.warmup_epochs for c in t2.cells} == {0.0, 1.0}
    for cell in t2.cells:
        paper.table2_cell(dict(cell.labels)["columns"], "train")
    assert {c.config.warmup_epochs for c in load_grid("table2", "paper").cells} == {0.0, 10.0}
    for cell in load_grid("table4", "paper").cells:
        labels = dict(cell.labels)
        paper.table4_cell(labels["datasets"], labels["depths"], labels["rates"])
        assert cell.config.augment == "none"
    assert {c.config.lr for c in load_grid("figure2", "quick").cells} == {0.1, 0.01, 0.001}
    assert len(load_grid("figure1", "paper").cells) == 3 * 12


@pytest.mark.parametrize("extra, message", [
    ('model = "resnet"', "valid: linear"),
    ("quick = { lr = -1.0 }", "lr=-1.0 is invalid"),
    ("lrr = 0.1", "unknown config key"),
    ("init_seed = 3", "--seeds"),
])
def test_a_grid_with_an_invalid_value_fails_before_any_run(tmp_path, extra, message):
    root = tmp_path / "results"
    result = lmc("reproduce", str(tiny_grid(tmp_path, extra)), "--results", str(root))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not paths.runs_dir(root).exists()  # nothing started


def test_grid_structure_errors(tmp_path):
    from experiments.grids import load_grid
    from lmc.config import ConfigError

    text = TINY.format(extra="")
    for bad, message in ((text.replace('axes = ["columns"]', 'axes = ["epochs"]'), "clash"),
                         (text.replace('axes = ["columns"]', 'axes = ["columns"]\nlayuot = "x"'), "unknown key"),
                         (text.replace("[scales.quick]", "[scales.quik]"), "no [scales.quick]")):
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_grid(str(tmp_path / "bad.toml"), "quick")


def test_unknown_artefact_lists_the_valid_ones(tmp_path):
    result = lmc("reproduce", "table9", "--results", str(tmp_path))
    assert result.returncode == 2
    assert "table9" in result.stderr and "table1" in result.stderr and "figure5" in result.stderr


def test_list_names_every_artefact_and_scale():
    from app.cli import main

    import io
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["reproduce", "--list"]) == 0
    lines = buf.getvalue().splitlines()
    for name in ("table1", "table2", "table3", "table4", "figure1", "figure2", "figure3", "figure5"):
        assert sum(line.startswith(name + " ") for line in lines) == 2


def test_incompatible_results_directory_is_refused(tmp_path):
    from lmc.paths import check_layout

    check_layout(tmp_path)  # a fresh root is stamped
    assert (tmp_path / "LAYOUT_VERSION").read_text().split()[-1] == "2"
    # A root of the previous layout (device in run names, no checksums): refused, not mixed.
    (tmp_path / "LAYOUT_VERSION").write_text("lmc-results-layout 1\n")
    result = lmc("reproduce", "table3", "--results", str(tmp_path))
    assert result.returncode == 2 and "layout version 1" in result.stderr


def test_seed_pairs_are_distinct():
    from experiments.grids import load_grid
    from app.sweep import plan_tasks

    tasks = plan_tasks(load_grid("table2", "quick"), 3)
    cell = [t for t in tasks if t["cell"] == tasks[0]["cell"]]
    assert [t["config"]["init_seed"] for t in cell] == [0, 1, 2]
    seeds = [tuple(t["seeds_a"]) for t in cell] + [tuple(t["seeds_b"]) for t in cell]
    assert len(set(seeds)) == 6
    assert len({t["run_a"] for t in tasks} | {t["run_b"] for t in tasks}) == 2 * len(tasks)


def test_analysis_never_imports_torch():
    code = ("import sys; import analysis.artefacts, analysis.report, analysis.figures, analysis.paper, "
            "analysis.tables, experiments.grids, app.reproduce; print('torch' in sys.modules, 'ffcv' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- tables from synthetic rows (no training) --------------------------------------------------------

def _rows(cells: list, split_values=("test", "train")) -> pd.DataFrame:
    """Rows as analysis.artefacts.collect makes them, from (labels, pair, barrier %) triples."""
    rows = []
    for labels, pair, value in cells:
        for split in split_values:
            rows.append({**labels, "cell": " | ".join(labels.values()), "pair": pair, "split": split,
                         "status": "ok", "error_barrier_pct": value, "normalized_barrier": value / 90,
                         "acc_a": 0.9, "acc_b": 0.92, "loss_a": 0.3, "loss_b": 0.3, "loss_barrier": 0.1,
                         "num_classes": 10})
    from analysis.artefacts import _mark_unstable

    return _mark_unstable(pd.DataFrame(rows))


def test_table1_layout_with_the_paper_beside_ours_and_the_2pct_line():
    from analysis.artefacts import table1

    df = _rows([({"rows": "4-Layer, BS=1024", "columns": "ADAM 0.005"}, 0, 40.0),
                ({"rows": "4-Layer, BS=1024", "columns": "ADAM 0.005"}, 1, 44.0),
                ({"rows": "2-Layer, BS=1024", "columns": "ADAM 0.005"}, 0, 3.0),
                ({"rows": "2-Layer, BS=1024", "columns": "SGD 0.1"}, 0, 0.1)])
    t = table1(df)
    assert list(t.wide.columns)[:3] == ["", "SGD 0.1 Test", "SGD 0.1 Train"]
    cell = t.wide.set_index("").loc["4-Layer, BS=1024", "ADAM 0.005 Test"]
    assert cell == "42.00 ± 2.83 [47.74]"
    row = t.tidy[(t.tidy.rows == "4-Layer, BS=1024") & (t.tidy.split == "Test")].iloc[0]
    assert row.paper == 47.74 and row.n == 2 and not row.ours_connected
    # 2-Layer ADAM: ours 3.0% is not connected, the paper's 1.30% is: the report must say so.
    assert any("2-Layer, BS=1024 / ADAM 0.005 (test)" in n and "other side" in n for n in t.notes)
    assert not any("SGD 0.1" in n for n in t.notes)


def test_a_grids_known_gaps_give_the_likely_reason_beside_a_cell_off_the_paper(tmp_path):
    """``[scales.<s>.known_gaps]``: the reason goes on the note of a listed cell that lands off
    the paper, not on a listed cell that lands on its side, nor on unlisted cells; a key that is
    no cell of the grid is refused (a typo would silently never print)."""
    from analysis.report import build_outputs
    from experiments.grids import load_grid
    from lmc.config import ConfigError

    df = _rows([({"rows": "2-Layer, BS=1024", "columns": "ADAM 0.005"}, 0, 3.0),
                ({"rows": "8-Layer, BS=1024", "columns": "ADAM 0.001"}, 0, 0.3),
                ({"rows": "4-Layer, BS=1024", "columns": "ADAM 0.005"}, 0, 40.0)])
    gaps = {"2-Layer, BS=1024 / ADAM 0.005": "too many ADAM steps", "4-Layer, BS=1024 / ADAM 0.005": "never shown"}
    (t,), _ = build_outputs("table1", ["rows", "columns"], ["table1"], df, pd.DataFrame(), tmp_path, known_gaps=gaps)
    off = [n for n in t.notes if n.startswith("2-Layer, BS=1024 / ADAM 0.005 (")]
    assert len(off) == 2 and all(n.endswith("; likely: too many ADAM steps") for n in off)
    assert not any("never shown" in n for n in t.notes)
    assert any(n.startswith("8-Layer, BS=1024 / ADAM 0.001 (") and "likely" not in n for n in t.notes)

    grid = TINY.format(extra="").replace('notes = "two epochs on 600 real digits"',
                                         'notes = "two epochs on 600 real digits"\nknown_gaps = {{ "ADAM up" = "x" }}')
    (tmp_path / "gaps.toml").write_text(grid.replace("{{", "{").replace("}}", "}"))
    with pytest.raises(ConfigError, match=re.escape("['ADAM up'] is not a cell of this grid")):
        load_grid(str(tmp_path / "gaps.toml"), "quick")
    (tmp_path / "gaps.toml").write_text(grid.replace("{{", "{").replace("}}", "}").replace("ADAM up", "ADAM ↑lr"))
    assert load_grid(str(tmp_path / "gaps.toml"), "quick").known_gaps == {"ADAM ↑lr": "x"}


def test_table2_and_table4_layouts():
    from analysis.artefacts import table2, table4

    t2 = table2(_rows([({"columns": "ADAM ↑lr"}, 0, 1.5), ({"columns": "ADAM ↑lr + W-up"}, 0, 0.3)]))
    assert list(t2.wide[""]) == ["%B train", "%B test"]  # the paper's order
    assert t2.wide.set_index("").loc["%B train", "ADAM ↑lr"] == "1.50 [2.92]"  # below the line, the paper above it
    assert any("ADAM ↑lr (" in n for n in t2.notes)
    df = _rows([({"datasets": "MNIST", "depths": "2-Layer", "rates": "High"}, 0, 0.0),
                ({"datasets": "CIFAR-10", "depths": "2-Layer", "rates": "High"}, 0, 0.0)])
    t4 = table4(df).wide.set_index("")
    assert t4.loc["MNIST", "2-Layer High"] == "91.00 [98.32]"
    assert t4.loc["CIFAR-10", "2-Layer High"].endswith("[unstable]")


# -- real sweeps -------------------------------------------------------------------------------

def test_data_subset_and_missing_data(fresh_root, tmp_path, monkeypatch):
    from lmc.manifest import read_manifest
    from experiments.grids import DataSpec, load_grid
    from app.sweep import DataMissingError, prepare_data
    from beton_builders.prepare import ensure_dataset

    spec = DataSpec(name="mnist_small_sub100", builder="mnist_small", train_subset=100)
    betons = ensure_dataset(spec, fresh_root)
    train = read_manifest(betons["train"])
    assert train["num_samples"] == 100 and set(train["class_counts"].values()) == {10}
    assert read_manifest(betons["test"])["num_samples"] == 200  # the full test split

    monkeypatch.setenv("LMC_DATA_ROOT", str(tmp_path / "empty"))
    grid = load_grid(str(tiny_grid(tmp_path, 'dataset = "cifar100"', "c100.toml")), "quick")
    with pytest.raises(DataMissingError, match="cifar100.*skip-missing-data"):
        prepare_data(grid, fresh_root)
    used, missing = prepare_data(grid, fresh_root, skip_missing=True)
    assert not used and list(missing) == ["cifar100"] and str(tmp_path / "empty") in missing["cifar100"]


def test_two_workers_on_one_results_dir_train_each_run_once(sweep_root):
    """Two sweeps at once on one results directory, each with two submitit (local executor) jobs."""
    import os

    args = ("reproduce", str(sweep_root.parent / "tiny.toml"), "--seeds", "2", "--executor", "submitit-local",
            "--jobs", "2", "--results", str(sweep_root))
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]

    events = [json.loads(line) for line in (sweep_root / "reproduce/tiny/quick/events.jsonl").read_text().splitlines()]
    trained = [run for e in events for run in e["trained"]]
    assert len(trained) == 4 and len(set(trained)) == 4  # 2 pairs x 2 children, each trained exactly once
    assert sum(e["interpolated"] for e in events) == 2  # each pair interpolated once
    for run in trained:
        metrics = (paths.run_dir(run, sweep_root) / paths.METRICS).read_text().splitlines()
        assert len(metrics) == 2  # 2 epochs, never appended twice
    assert len({e["pid"] for e in events}) >= 2  # the work really was shared between workers
    assert not list(sweep_root.rglob(".*.tmp"))  # no half-written files left behind
    summary = json.loads((sweep_root / "reproduce/tiny/quick/summary.json").read_text())
    assert len(summary["invocations"]) == 2  # both sweeps recorded, neither clobbered


def test_reproduce_end_to_end_then_report(sweep_root):
    """The local pool on the same grid: everything cached, the table and figures written, the report."""
    grid = str(sweep_root.parent / "tiny.toml")
    for _ in range(2):  # the second (or, after the test above, both) finds every run finished
        result = lmc("reproduce", grid, "--seeds", "2", "--jobs", "2", "--results", str(sweep_root))
        assert result.returncode == 0, result.stderr[-2000:]
    assert "0 runs trained now" in result.stdout
    assert "[2.86]" in result.stdout and "ADAM ↑lr" in result.stdout  # the paper beside ours
    out = sweep_root / "reproduce" / "tiny" / "quick"
    for name in ("table2.csv", "table2.md", "table2.tex", "curves.png", "curves.pdf", "results.parquet"):
        assert (out / name).exists(), name
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2 * 2 and set(df.status) == {"ok"}  # pairs x splits
    tidy = pd.read_csv(out / "table2.csv")
    assert set(tidy.columns) >= {"mean", "std", "n", "paper"} and set(tidy.n) == {2}
    assert " ± " in (out / "table2.md").read_text()  # mean ± std across the two pairs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["mnist_small"]["train"] == 600 and summary["seeds"] == 2

    report = lmc("report", "--results", str(sweep_root))
    assert report.returncode == 0
    text = (sweep_root / "REPRODUCTION.md").read_text()
    assert "tiny Table 2" in text and "[2.86]" in text and "wall time" in text and "600 train" in text
