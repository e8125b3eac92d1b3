"""95% bootstrap intervals over seed pairs, and "connected" decided on them."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lmc import paths

GRID = """
artefact = "tiny_ci"
title = "tiny Table 2 with intervals"
layout = "table2"
axes = ["columns"]

[base]
model = "mlp"
dataset = "mnist_small"
width = 16
batch_size = 64

[scales.quick]
notes = "two epochs on 600 real digits"
config = { epochs = 2 }

[scales.paper]
notes = "the same"
config = { epochs = 2 }

[[columns]]
label = "SGD ↑lr"
optimizer = "sgd"
lr = 0.1
"""


def _rows(values_by_cell: dict[str, list[float]]) -> pd.DataFrame:
    """Rows as analysis.artefacts.collect makes them: one per pair and split (same value for both)."""
    from analysis.artefacts import _mark_unstable

    rows = []
    for label, values in values_by_cell.items():
        for pair, value in enumerate(values):
            for split in ("test", "train"):
                rows.append({"columns": label, "cell": label, "pair": pair, "split": split, "status": "ok",
                             "error_barrier_pct": value, "normalized_barrier": value / 90, "acc_a": 0.9,
                             "acc_b": 0.92, "loss_a": 0.3, "loss_b": 0.3, "loss_barrier": 0.1, "num_classes": 10})
    return _mark_unstable(pd.DataFrame(rows))


def test_identical_values_give_a_degenerate_interval():
    from analysis.intervals import bootstrap_interval

    assert bootstrap_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)
    assert bootstrap_interval([0.0, 0.0]) == (0.0, 0.0)
    low, high = bootstrap_interval([0.7])  # one pair: nothing to resample
    assert math.isnan(low) and math.isnan(high)


def test_the_interval_brackets_the_mean_and_stays_inside_the_data():
    from analysis.intervals import bootstrap_interval

    values = np.random.default_rng(0).gamma(2.0, 1.0, size=12)
    low, high = bootstrap_interval(values)
    assert values.min() <= low < values.mean() < high <= values.max()
    # With three pairs each extreme is resampled alone often enough (1/27 > 2.5%): the data's range.
    assert bootstrap_interval([1.0, 4.0, 2.0]) == (1.0, 4.0)


def test_the_seeded_bootstrap_is_reproducible():
    from analysis.intervals import bootstrap_interval

    values = list(np.random.default_rng(1).normal(1.0, 0.5, size=10))
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)


def test_connected_is_decided_on_the_interval_and_a_straddling_cell_reads_undecided():
    from analysis.artefacts import table2
    from analysis.intervals import verdict

    assert verdict(0.1, 1.9) == "connected" and verdict(2.0, 5.0) == "not connected"
    assert verdict(1.5, 2.5) == "undecided"
    df = _rows({"SGD ↑lr": [0.0, 0.1, 0.2], "ADAM ↑lr": [1.0, 2.6, 3.0], "ADAM ↓lr": [3.0, 3.5, 4.0]})
    t = table2(df, intervals=True)
    tidy = t.tidy.set_index(["columns", "split"])
    assert {"ci_low", "ci_high", "ours_verdict", "paper_in_ci"} <= set(t.tidy.columns)
    assert tidy.loc[("ADAM ↑lr", "Test"), "ours_verdict"] == "undecided"
    assert tidy.loc[("ADAM ↑lr", "Test"), "ours_connected"] is None  # not forced to a side
    # Its mean (2.2%) alone would have read "not connected".
    assert tidy.loc[("ADAM ↑lr", "Test"), "mean"] > 2.0
    assert tidy.loc[("SGD ↑lr", "Test"), "ours_verdict"] == "connected"
    assert tidy.loc[("ADAM ↓lr", "Test"), "ours_verdict"] == "not connected"
    cell = t.wide.set_index("").loc["%B test", "ADAM ↑lr"]
    assert "undecided" in cell and cell.endswith("[2.86]")
    assert any("ADAM ↑lr (test): undecided" in n for n in t.notes)
    # The paper's 2.86 lies inside [1.0, 3.0]; its 0.05 (SGD ↑lr test) inside [0.0, 0.2]; its 0.06
    # (ADAM ↓lr test) outside [3.0, 4.0], and that cell is on the other side of the 2% line.
    assert tidy.loc[("ADAM ↑lr", "Test"), "paper_in_ci"] and tidy.loc[("SGD ↑lr", "Test"), "paper_in_ci"]
    assert not tidy.loc[("ADAM ↓lr", "Test"), "paper_in_ci"]
    assert "paper outside" in t.wide.set_index("").loc["%B test", "ADAM ↓lr"]
    assert any("ADAM ↓lr (test)" in n and "whole interval" in n for n in t.notes)


def test_without_intervals_the_table_is_unchanged():
    from analysis.artefacts import table2

    t = table2(_rows({"ADAM ↑lr": [1.0, 2.6, 3.0]}))
    assert "ci_low" not in t.tidy and t.wide.set_index("").loc["%B test", "ADAM ↑lr"] == "2.20 ± 1.06 [2.86]"


def lmc(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True, timeout=900)


def test_intervals_with_one_seed_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID)
    root = tmp_path / "results"
    result = lmc("reproduce", str(tmp_path / "grid.toml"), "--seeds", "1", "--intervals", "--results", str(root))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--intervals" in result.stderr and "--seeds" in result.stderr
    assert not root.exists()


def test_a_three_seed_table_from_real_runs_carries_intervals(tmp_path, mnist_small):
    (tmp_path / "grid.toml").write_text(GRID)
    root = tmp_path / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    result = lmc("reproduce", str(tmp_path / "grid.toml"), "--seeds", "3", "--intervals", "--results", str(root))
    assert result.returncode == 0, result.stderr[-2000:]
    out = paths.sweep_dir("grid", "quick", root)
    tidy = pd.read_csv(out / "table2.csv")
    assert set(tidy.n) == {3} and {"ci_low", "ci_high", "ours_verdict", "paper_in_ci"} <= set(tidy.columns)
    df = pd.read_parquet(out / "results.parquet")
    for split, row in tidy.assign(split=tidy.split.str.lower()).set_index("split").iterrows():
        values = df[df.split == split].error_barrier_pct
        assert len(values) == 3  # three real pairs (their barriers may coincide: then the interval is a point)
        assert row.ci_low <= row["mean"] <= row.ci_high
        assert math.isclose(row.ci_low, values.min()) and math.isclose(row.ci_high, values.max())
    assert "CI " in (out / "table2.md").read_text() and "95% bootstrap CI" in result.stdout
    assert json.loads((out / "summary.json").read_text())["intervals"] is True


def test_a_figure_table_names_its_undecided_cells():
    from analysis.artefacts import figure_table

    df = _rows({"p=0.0": [0.1, 0.2, 0.3], "p=0.5": [1.0, 2.5, 3.0]}).rename(columns={"columns": "slopes"})
    t = figure_table("figure1", df, ["slopes"], "error_barrier_pct", intervals=True)
    assert [n.split(":")[0] for n in t.notes] == ["p=0.5 (test)", "p=0.5 (train)"]
    assert "undecided" in t.wide.set_index("").loc["p=0.5", "test"]
    assert "undecided" not in t.wide.set_index("").loc["p=0.0", "test"]
