"""The trainer's contract under faults and odd starts, and the interpolation's refusals.

Each test here failed on the code before the layering rework (or exercises a guarantee that
rework added): metrics rows kept by epoch, the device out of run names, damaged checkpoints,
torn metrics lines, damaged configs, non-pairs refused, Eq. 2 on the test split.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import small_config, state_equal
from lmc import paths


@pytest.fixture
def root(mnist_small, tmp_path):
    """A fresh results root holding only the mnist_small .betons."""
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", tmp_path))
    return tmp_path


def final_state(run):
    from experiments.interpolate import load_final

    return load_final(run)[1]


def metric_epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / paths.METRICS).read_text().splitlines()]


def test_resuming_a_child_spawned_after_one_epoch_keeps_one_row_per_epoch(root):
    """A kill between the metrics append and the checkpoint left a row of an epoch that is
    trained again on resume; rows are kept by epoch number, not by position."""
    from experiments.training import train

    steps_per_epoch = 600 // 32 + 1
    cfg = small_config(epochs=3, spawn_step=steps_per_epoch, order_seed=2, aug_seed=2, parent_order_seed=1,
                       parent_aug_seed=1)
    straight = train(cfg, root, progress=False)
    rows_straight = [json.loads(x) for x in (straight / paths.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in rows_straight] == [2, 3]

    other = root / "again"
    shutil.copytree(paths.beton_dir("mnist_small", root), paths.beton_dir("mnist_small", other))
    run = train(cfg, other, progress=False, stop_after_epochs=1)
    # As if killed after appending epoch 3's row, before its checkpoint was written.
    with open(run / paths.METRICS, "a") as f:
        f.write(json.dumps({**rows_straight[-1], "stale": True}) + "\n")
    run = train(cfg, other, progress=False)
    rows = [json.loads(x) for x in (run / paths.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2, 3] and "stale" not in rows[-1]
    assert rows[-1]["test_loss"] == rows_straight[-1]["test_loss"]
    assert state_equal(final_state(straight), final_state(run))


def test_the_device_is_provenance_not_part_of_the_run_name(root):
    from experiments.config import TrainConfig
    from experiments.training import train

    assert "device" not in TrainConfig.__dataclass_fields__
    a = train(small_config(epochs=1), root, device="cpu", progress=False)
    b = train(small_config(epochs=1), root, device="auto", progress=False)  # this machine: the same computation
    assert a == b
    assert json.loads((a / paths.PROVENANCE).read_text())["device"] == "cpu"


def test_resuming_on_another_device_is_refused_unless_allowed(root):
    from experiments.training import checkpoints, train
    from experiments.training.run import DeviceChangeError

    cfg = small_config(epochs=2, order_seed=8)
    run = train(cfg, root, progress=False, stop_after_epochs=1)
    path = paths.checkpoint_path(run, 1)
    ckpt = checkpoints.load(path)
    checkpoints.save(path, {**ckpt, "device": "cuda"})  # as if written on a GPU
    with pytest.raises(DeviceChangeError, match="checkpointed on cuda and would resume on cpu"):
        train(cfg, root, progress=False)
    train(cfg, root, progress=False, allow_device_change=True)
    assert (run / paths.DONE).exists()
    changes = json.loads((run / paths.PROVENANCE).read_text())["device_changes"]
    assert changes == [{"epoch": 1, "from": "cuda", "to": "cpu"}]


@pytest.mark.parametrize("damage", ["flip", "truncate", "unchecked"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(root, damage, capfd):
    from experiments.training import train

    cfg = small_config(epochs=3, order_seed=5, aug_seed=5, optimizer="adam", lr=0.002)
    straight_root = root / "straight"
    shutil.copytree(paths.beton_dir("mnist_small", root), paths.beton_dir("mnist_small", straight_root))
    straight = train(cfg, straight_root, progress=False)

    run = train(cfg, root, progress=False, stop_after_epochs=2)
    newest = paths.checkpoint_path(run, 2)
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(bytes(data))
    elif damage == "truncate":
        newest.write_bytes(bytes(data[: len(data) // 3]))
    else:  # a plain torch file where a checksummed one belongs
        from experiments.training import checkpoints

        torch.save(checkpoints.load(newest), newest)
    run = train(cfg, root, progress=False)
    err = capfd.readouterr().err
    assert "skipping a damaged checkpoint" in err and "epoch_0002.pt" in err
    assert metric_epochs(run) == [1, 2, 3]
    assert state_equal(final_state(straight), final_state(run))


def test_a_torn_metrics_line_and_stale_temporary_files_are_cleaned_on_resume(root):
    from experiments.training import train

    cfg = small_config(epochs=2, order_seed=6)
    run = train(cfg, root, progress=False, stop_after_epochs=1)
    with open(run / paths.METRICS, "a") as f:
        f.write('{"epoch": 2, "step": 3')  # killed in the middle of an append
    stale = [run / ".config.json.k2j4h5g6.tmp", run / paths.CHECKPOINTS / ".epoch_0002.pt.a1b2c3d4.tmp"]
    for tmp in stale:
        tmp.write_bytes(b"")
    run = train(cfg, root, progress=False)
    assert metric_epochs(run) == [1, 2]
    assert not any(tmp.exists() for tmp in stale)


def test_a_damaged_config_is_one_line_and_exit_2(root):
    from experiments.training import train

    cfg = small_config(epochs=2, order_seed=7)
    run = train(cfg, root, progress=False, stop_after_epochs=1)
    (run / paths.CONFIG).write_text((run / paths.CONFIG).read_text()[:40])
    result = subprocess.run([sys.executable, "-m", "app.cli", "train", "--dataset", "mnist_small", "--width", "32",
                             "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--order-seed", "7",
                             "--results", str(root), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json is damaged" in lines[0] and "remove the run directory" in lines[0]


def test_a_parent_is_trained_once_for_all_its_spawn_steps(root):
    from experiments.training import checkpoints, train, train_parent

    parent = small_config(epochs=2, order_seed=3, aug_seed=3)
    saved = train_parent(parent, [4, 19, 30], root)
    assert sorted(saved) == [4, 19, 30] and all(p.exists() for p in saved.values())
    mtimes = {k: p.stat().st_mtime_ns for k, p in saved.items()}
    assert train_parent(parent, [19], root)[19].stat().st_mtime_ns == mtimes[19]  # nothing retrained
    # Continuing from step 19 to 25 gives the state an uninterrupted parent has at 25.
    train_parent(parent, [25], root)
    other = root / "other"
    shutil.copytree(paths.beton_dir("mnist_small", root), paths.beton_dir("mnist_small", other))
    direct = train_parent(parent, [25], other)[25]
    assert state_equal(checkpoints.load(saved[19].with_name("step_0000025.pt"))["model"],
                       checkpoints.load(direct)["model"])
    # A child at step 19 with the parent's own noise is the uninterrupted run.
    child = small_config(epochs=2, order_seed=3, aug_seed=3, spawn_step=19, parent_order_seed=3, parent_aug_seed=3)
    assert state_equal(final_state(train(child, root, progress=False)), final_state(train(parent, root, progress=False)))


def test_a_spawn_step_beyond_the_run_is_refused_before_anything_is_written(root):
    from experiments.training import train
    from lmc.errors import UserError

    cfg = small_config(epochs=1, spawn_step=500, parent_order_seed=1)
    with pytest.raises(UserError, match="spawn_step=500 is beyond the run's 19 steps"):
        train(cfg, root, progress=False)
    assert not paths.runs_dir(root).exists()


def test_interpolation_refuses_runs_that_are_not_a_pair(root):
    """A linear and an MLP net of equal shapes, or SGD vs ADAM, are not one pair's endpoints."""
    from experiments.interpolate import InterpolationError, interpolate_runs
    from experiments.training import train

    mlp = train(small_config(epochs=1), root, progress=False)
    linear = train(small_config(epochs=1, model="linear", order_seed=1), root, progress=False)
    adam = train(small_config(epochs=1, optimizer="adam", lr=0.001, order_seed=2), root, progress=False)
    with pytest.raises(InterpolationError, match="differ in model 'mlp' vs 'linear'"):
        interpolate_runs(mlp, linear, root=root, progress=False)
    with pytest.raises(InterpolationError, match="differ in optimizer 'sgd' vs 'adam', lr 0.02 vs 0.001"):
        interpolate_runs(mlp, adam, root=root, progress=False)
    assert not paths.interpolations_dir(root).exists()


def test_the_normalised_barrier_divides_by_test_accuracy_without_a_test_split(root):
    from experiments.interpolate import interpolate_runs
    from experiments.training import train

    a = train(small_config(epochs=1, order_seed=1, aug_seed=1), root, progress=False)
    b = train(small_config(epochs=1, order_seed=2, aug_seed=2), root, progress=False)
    _, train_only = interpolate_runs(a, b, root=root, progress=False, splits=("train",))
    test_acc = [json.loads((r / paths.METRICS).read_text().splitlines()[-1])["test_acc"] for r in (a, b)]
    row = train_only.iloc[0]
    assert row.normalized_barrier == pytest.approx(row.error_barrier / (0.5 * sum(test_acc)), rel=1e-12)
    assert row.acc_a != test_acc[0]  # the train split's accuracy is another number
    # A train-only result has its own folder: it is never taken for the complete one.
    names = sorted(p.name for p in paths.interpolations_dir(root).iterdir())
    assert names == [paths.interpolation_name(a.name, b.name, 11, ("train",))]
    assert names[0].endswith("-T11-train")
