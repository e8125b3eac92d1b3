"""Trainer, pairs and interpolation on real MNIST digits (600 train / 200 test, 2 epochs)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import small_config, state_equal
from lmc import paths


@pytest.fixture(scope="module")
def trained(mnist_small, results_root):
    from experiments.training import train

    cfg = small_config(order_seed=1, aug_seed=1)
    return train(cfg, results_root, progress=False)


def final_state(run):
    from experiments.interpolate import load_final

    return load_final(run)[1]


def test_run_directory_layout(trained):
    cfg = json.loads((trained / paths.CONFIG).read_text())
    assert cfg["order_seed"] == 1 and cfg["width"] == 32
    metrics = [json.loads(line) for line in (trained / paths.METRICS).read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"test_loss", "test_acc", "train_loss_running", "lr", "seconds"} <= set(metrics[0])
    assert "train_acc" in metrics[-1]  # the clean train split is evaluated at the last epoch
    # 2 epochs of SGD on real digits learn something: far above chance (10%).
    assert metrics[-1]["test_acc"] > 0.5
    assert (trained / paths.DONE).exists() and (trained / paths.FINAL).exists()
    prov = json.loads((trained / paths.PROVENANCE).read_text())
    from importlib.metadata import version

    assert prov["versions"]["torch"] == version("torch")
    manifest = json.loads(paths.manifest_path(paths.beton_path("mnist_small", "train")).read_text())
    assert prov["device"] == "cpu" and prov["data_manifest"] == manifest["beton_sha256"][:16]
    digest = json.loads((trained / paths.DIGEST).read_text())
    assert len(digest["epochs"]) == 2
    # The two newest epoch checkpoints are kept, each checksummed.
    from lmc.io import verify_checked

    assert sorted(p.name for p in (trained / paths.CHECKPOINTS).iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert all(verify_checked(p) > 0 for p in (trained / paths.CHECKPOINTS).iterdir())


def test_identical_seeds_identical_weights(trained, mnist_small, tmp_path):
    """Same config, a fresh results root (so nothing is cached): bitwise-identical weights."""
    import shutil

    from experiments.training import train

    root = tmp_path / "again"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    again = train(small_config(order_seed=1, aug_seed=1), root, progress=False)
    assert state_equal(final_state(trained), final_state(again))


def test_changing_only_the_order_seed_changes_weights(trained, results_root):
    from experiments.training import train

    other = train(small_config(order_seed=2, aug_seed=1), results_root, progress=False)
    a, b = final_state(trained), final_state(other)
    assert not state_equal(a, b)
    # Same init seed: before training they were the same network.
    from experiments.training import build_model

    m1 = build_model(small_config(order_seed=1), (1, 28, 28), 10)
    m2 = build_model(small_config(order_seed=2), (1, 28, 28), 10)
    assert state_equal(m1.state_dict(), m2.state_dict())


def test_finished_run_is_skipped(trained, results_root):
    from experiments.training import train

    before = (trained / paths.FINAL).stat().st_mtime_ns
    assert train(small_config(order_seed=1, aug_seed=1), results_root, progress=False) == trained
    assert (trained / paths.FINAL).stat().st_mtime_ns == before


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_resume_is_bitwise(mnist_small, tmp_path, device):
    """2 epochs straight == 1 epoch, interruption, resume, 1 epoch (on CUDA too: the checkpoint's
    RNG states must come back as CPU tensors)."""
    import shutil

    from experiments.training import train

    roots = {}
    for name in ("straight", "resumed"):
        roots[name] = tmp_path / name
        shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", roots[name]))
    cfg = small_config(order_seed=3, aug_seed=4, optimizer="adam", lr=0.001, warmup_epochs=1.0)
    straight = train(cfg, roots["straight"], device=device, progress=False)
    partial = train(cfg, roots["resumed"], device=device, progress=False, stop_after_epochs=1)
    assert not (partial / paths.DONE).exists()
    assert [p.name for p in (partial / paths.CHECKPOINTS).glob("*.pt")] == ["epoch_0001.pt"]
    resumed = train(cfg, roots["resumed"], device=device, progress=False)
    assert state_equal(final_state(straight), final_state(resumed))
    lines = (resumed / paths.METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_spawn_with_the_parents_own_noise_equals_plain_training(mnist_small, results_root):
    """A child spawned at step k that keeps the parent's seeds must equal the unspawned run:
    the parent phase, the hand-over mid-epoch and the rest of the epoch all line up."""
    from experiments.training import train

    plain = train(small_config(order_seed=5, aug_seed=6), results_root, progress=False)
    spawned = train(small_config(order_seed=5, aug_seed=6, spawn_step=4, parent_order_seed=5,
                                 parent_aug_seed=6), results_root, progress=False)
    assert plain != spawned
    assert state_equal(final_state(plain), final_state(spawned))


def test_self_interpolation_has_zero_barrier(trained, results_root):
    from experiments.interpolate import interpolate_runs

    curve, bars = interpolate_runs(trained, trained, root=results_root, progress=False, write=False)
    assert len(curve) == 2 * 11
    assert (bars.error_barrier == 0).all() and (bars.loss_barrier == 0).all()
    assert (bars.max_deviation == 0).all()
    for _, group in curve.groupby("split"):
        assert group.loss.nunique() == 1 and group.error.nunique() == 1


def test_endpoints_reproduce_the_runs_metrics_exactly(trained, results_root):
    from experiments.interpolate import interpolate_runs
    from experiments.training import train

    other = train(small_config(order_seed=2, aug_seed=2), results_root, progress=False)
    curve, bars = interpolate_runs(trained, other, root=results_root, progress=False)
    last = {r: json.loads((r / paths.METRICS).read_text().splitlines()[-1]) for r in (trained, other)}
    for split in ("train", "test"):
        rows = curve[curve.split == split].set_index("alpha")
        for alpha, run in ((0.0, trained), (1.0, other)):
            assert rows.loc[alpha, "loss"] == last[run][f"{split}_loss"]
            assert rows.loc[alpha, "accuracy"] == last[run][f"{split}_acc"]
    out = paths.interpolation_dir(f"{trained.name}__{other.name}-T11-train+test", results_root)
    assert (out / paths.CURVE_PARQUET).exists() and (out / paths.BARRIERS).exists()
    assert (bars.error_barrier >= 0).all()


def test_same_noise_control(mnist_small, results_root):
    from experiments.interpolate import interpolate_runs
    from experiments.pairs import train_pair

    run_a, run_b = train_pair(small_config(), (7, 7), (9, 9), same_noise=True, root=results_root, progress=False)
    assert run_a != run_b
    assert state_equal(final_state(run_a), final_state(run_b))
    _, bars = interpolate_runs(run_a, run_b, root=results_root, progress=False, write=False)
    assert (bars.error_barrier == 0).all() and (bars.loss_barrier == 0).all()


def test_interpolation_refuses_mismatched_shapes(trained, results_root):
    from experiments.interpolate import InterpolationError, interpolate_runs
    from experiments.training import train

    wide = train(small_config(width=48, epochs=1), results_root, progress=False)
    with pytest.raises(InterpolationError, match=r"parameter 'layers\.0\.weight' differs in shape: A \(32, 784\) vs B \(48, 784\)"):
        interpolate_runs(trained, wide, root=results_root, progress=False, write=False)


def test_different_init_seeds_are_refused_unless_allowed(trained, results_root):
    from experiments.interpolate import InterpolationError, interpolate_runs
    from experiments.training import train

    other = train(small_config(init_seed=1, epochs=1), results_root, progress=False)
    with pytest.raises(InterpolationError, match=r"not a pair: they differ in epochs 2 vs 1, init_seed 0 vs 1"):
        interpolate_runs(trained, other, root=results_root, progress=False, write=False, splits=("test",))
    _, bars = interpolate_runs(trained, other, root=results_root, progress=False, splits=("test",),
                               allow_different=True)
    record = json.loads((paths.interpolation_dir(paths.interpolation_name(trained.name, other.name, 11, ("test",)),
                                                 results_root) / paths.BARRIERS).read_text())
    assert record["allowed_differences"] == {"epochs": [2, 1], "init_seed": [0, 1]}
    assert record["splits"] == ["test"]


def test_training_refuses_a_results_root_of_another_layout_version(mnist_small, tmp_path):
    import subprocess
    import sys

    # The root holds a usable dataset, but was stamped by an older layout: nothing may be added.
    for split in ("train", "test"):
        dst = paths.beton_path("mnist_small", split, tmp_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        for src in (mnist_small[split], paths.manifest_path(mnist_small[split])):
            (dst.parent / src.name).write_bytes(src.read_bytes())
    (tmp_path / paths.LAYOUT_FILE).write_text("lmc-results-layout 0\n")
    result = subprocess.run([sys.executable, "-m", "app.cli", "train", "--dataset", "mnist_small", "--epochs", "1",
                             "--width", "8", "--results", str(tmp_path), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "layout version 0" in result.stderr and "fresh directory" in result.stderr
    assert not paths.runs_dir(tmp_path).exists()


def test_attention_embed_dim_is_a_config_field():
    from experiments.config import TrainConfig
    from experiments.training import build_model

    paper = build_model(TrainConfig(model="attention"), (3, 32, 32), 10)
    small = build_model(TrainConfig(model="attention", embed_dim=64, heads=2, head_dim=16), (3, 32, 32), 10)
    assert paper.patch_embed.out_channels == 648  # 0 = the width that gives the paper's 1.08 M
    assert small.patch_embed.out_channels == 64
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in paper.parameters()) / 10
    assert TrainConfig(embed_dim=64).run_name() != TrainConfig().run_name()
    with pytest.raises(ValueError, match="embed_dim"):
        TrainConfig(model="attention", embed_dim=-1)
