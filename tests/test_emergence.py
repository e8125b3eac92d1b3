"""`lmc emergence`: the parent trained once per seed pair, children at every spawn step, k*."""
from __future__ import annotations

import pandas as pd
import pytest

from lmc import paths


def _rows(values: dict[int, list[float]]) -> pd.DataFrame:
    """Barrier rows of both splits for {spawn step: [error barrier % of each pair]}."""
    rows = [{"spawn_step": k, "epochs_at_spawn": k / 10, "pair": i, "split": split, "error_barrier_pct": v,
             "loss_barrier": v / 100} for k, vs in values.items() for i, v in enumerate(vs) for split in ("train", "test")]
    return pd.DataFrame(rows)


def test_k_star_is_the_first_step_whose_whole_interval_is_below_2_percent():
    from analysis.emergence import emergence_table

    # k=0: clearly broken; k=10: straddles 2% (undecided, not emerged); k=100: every pair below.
    table, k_star = emergence_table(_rows({0: [30.0, 40.0, 35.0], 10: [0.5, 4.0, 1.0], 100: [0.2, 0.4, 0.3]}))
    assert k_star == 100
    straddling = table.set_index("spawn_step").loc[10]
    assert straddling.test_error_ci_low < 2.0 < straddling.test_error_ci_high
    assert emergence_table(_rows({0: [30.0, 40.0], 10: [5.0, 6.0]}))[1] is None


def test_a_dip_below_2_percent_that_does_not_last_is_reported():
    from analysis.emergence import emergence_table, stays_below

    table, k_star = emergence_table(_rows({0: [20.0, 30.0], 3: [1.0, 1.5], 8: [3.0, 4.0], 20: [0.5, 0.6]}))
    assert k_star == 3 and stays_below(table, k_star) == (False, [8])
    table, k_star = emergence_table(_rows({0: [20.0, 30.0], 3: [1.0, 1.5], 8: [0.3, 0.4]}))
    assert stays_below(table, k_star) == (True, [])


def test_spawn_steps_default_to_zero_and_log_spaced_steps():
    from app.emergence import default_spawn_steps

    steps = default_spawn_steps(1000)
    assert steps[0] == 0 and steps[-1] == 500 and list(steps) == sorted(set(steps)) and len(steps) == 7


def _lmc(root, *argv):
    from app.cli import main

    return main(["emergence", "--dataset", "mnist_small", "--width", "16", "--epochs", "2", "--batch-size", "64",
                 "--results", str(root), "--quiet", *argv])


def test_emergence_trains_each_parent_once_and_writes_table_and_figure(mnist_small, results_root, capsys):
    assert _lmc(results_root, "--spawn-steps", "0,3,10", "--seeds", "2") == 0
    out = capsys.readouterr().out
    assert "LMC emerges at k*" in out or "does not emerge" in out
    table_path = out.strip().splitlines()[-1]
    table = pd.read_csv(table_path)
    assert list(table.spawn_step) == [0, 3, 10] and (table.pairs == 2).all()
    assert (paths.figure_files(table_path[: -len(".csv")])[".png"]).exists()
    # One parent per seed pair, holding the state at both spawn steps; children at every step.
    parents = [p for p in paths.runs_dir(results_root).iterdir()
               if (p / paths.CHECKPOINTS).is_dir() and any((p / paths.CHECKPOINTS).glob("step_*.pt"))]
    assert len(parents) == 2
    assert all(sorted(x.name for x in (p / paths.CHECKPOINTS).glob("step_*.pt")) ==
               ["step_0000003.pt", "step_0000010.pt"] for p in parents)
    # A rerun trains and evaluates nothing: every run and interpolation file stays as it was.
    written = {f: f.stat().st_mtime_ns for d in (paths.runs_dir(results_root), paths.interpolations_dir(results_root))
               for f in d.rglob("*") if f.is_file() and not f.name.endswith(".lock")}
    assert _lmc(results_root, "--spawn-steps", "0,3,10", "--seeds", "2") == 0
    assert pd.read_csv(capsys.readouterr().out.strip().splitlines()[-1]).equals(table)
    assert {f: f.stat().st_mtime_ns for f in written} == written


@pytest.mark.parametrize("argv, message", [
    (("--seeds", "1"), "need at least 2 seed pairs"),
    (("--spawn-steps", "0,500"), "500 is beyond the run's 20 steps"),
    (("--spawn-steps", "0,x"), "expected non-negative integers"),
])
def test_bad_input_is_one_line_and_writes_nothing(mnist_small, tmp_path, argv, message, capsys):
    import shutil

    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", tmp_path))
    assert _lmc(tmp_path, *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not paths.runs_dir(tmp_path).exists()
