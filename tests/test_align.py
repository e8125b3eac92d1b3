"""Permutation alignment (weight matching): function preserved, permutations recovered, bad input refused."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import small_config
from lmc import paths

# Tiny models of every permutable family, for 1x28x28 digits (kernel 7: 4x4 positions).
FAMILIES = [("mlp", dict(depth=2, width=16)), ("mlp", dict(depth=4, width=12, slope=0.1)),
            ("linear", dict(depth=3, width=8)), ("toeplitz_mlp", dict(channels=3, kernel=7)),
            ("cnn", dict(channels=6, kernel=7)), ("lc_cnn", dict(channels=5, kernel=7))]


def _model(family: str, hp: dict, seed: int) -> torch.nn.Module:
    from experiments.models import build_model

    torch.manual_seed(seed)
    return build_model(family, (1, 28, 28), 10, **hp).double()


@pytest.fixture(scope="module")
def different_init_pair(mnist_small, results_root):
    """Two minimal MLPs on 600 real digits from different initialisations (and different noise).

    Seeds no other test module uses: the results root is shared by the session, and a run another
    module expects to train itself (at its own thread count) must not be found here, cached."""
    from experiments.training import train

    a = train(small_config(init_seed=20, order_seed=21, aug_seed=21), results_root, progress=False)
    b = train(small_config(init_seed=22, order_seed=23, aug_seed=23), results_root, progress=False)
    return a, b


@pytest.mark.parametrize("family, hp", FAMILIES, ids=[f"{f}{h.get('depth', '')}" for f, h in FAMILIES])
def test_permuted_model_computes_the_same_function_with_other_weights(family, hp):
    from experiments import permutations

    model = _model(family, hp, seed=0)
    state = model.state_dict()
    spec = permutations.spec_for(family, state)
    sigma = permutations.random_perms(spec, np.random.default_rng(1))
    permuted = _model(family, hp, seed=0)
    permuted.load_state_dict(permutations.apply(spec, sigma, state))
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(permuted(x), model(x), rtol=1e-12, atol=1e-12)
    assert all(not torch.equal(permuted.state_dict()[k], state[k]) for k in spec.weights)


@pytest.mark.parametrize("family, hp", FAMILIES, ids=[f"{f}{h.get('depth', '')}" for f, h in FAMILIES])
def test_matching_a_permuted_copy_recovers_the_inverse_permutation(family, hp):
    from experiments import permutations

    state_a = _model(family, hp, seed=0).state_dict()
    spec = permutations.spec_for(family, state_a)
    sigma = permutations.random_perms(spec, np.random.default_rng(2))
    state_b = permutations.apply(spec, sigma, state_a)
    matching = permutations.weight_matching(spec, state_a, state_b, seed=3)
    inverse = permutations.inverse(sigma)
    assert all(np.array_equal(matching.perms[k], inverse[k]) for k in inverse)
    restored = permutations.apply(spec, matching.perms, state_b)
    assert all(torch.equal(restored[k], state_a[k]) for k in state_a)
    assert matching.converged


def test_lc_cnn_permutes_each_position_on_its_own():
    """An LC-CNN shares no kernel between positions, so each position has its own channel order."""
    from experiments import permutations

    state = _model("lc_cnn", dict(channels=5, kernel=7), seed=0).state_dict()
    spec = permutations.spec_for("lc_cnn", state)
    assert spec.perms["P_channels"].groups == 16  # 4x4 positions
    sigma = permutations.random_perms(spec, np.random.default_rng(4))
    assert len({tuple(p) for p in sigma["P_channels"]}) > 1  # the test uses different orders per position
    cnn_spec = permutations.spec_for("cnn", _model("cnn", dict(channels=5, kernel=7), seed=0).state_dict())
    assert cnn_spec.perms["P_channels"].groups == 1  # a CNN's kernel is shared: one order for all


def test_one_hidden_layer_mlp_converges_in_one_sweep(different_init_pair):
    from experiments import permutations
    from experiments.interpolate import load_final

    (_, state_a), (_, state_b) = (load_final(r) for r in different_init_pair)
    spec = permutations.spec_for("mlp", state_a)
    matching = permutations.weight_matching(spec, state_a, state_b, seed=0)
    # One permutation, solved exactly: the first sweep finds it, the second confirms it.
    assert matching.sweeps == 1 and matching.converged and len(matching.gains) == 2
    assert matching.gains[0] > 0 and matching.gains[1] == 0.0
    again = permutations.weight_matching(spec, state_a, state_b, seed=0)
    assert np.array_equal(again.perms["P_0"], matching.perms["P_0"])  # seeded: reproducible


def test_align_runs_writes_a_run_like_folder_that_computes_b(different_init_pair, results_root):
    from experiments.align import align_runs
    from experiments.interpolate import load_final
    from experiments.models import build_model

    run_a, run_b = different_init_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # different inits are the point here: no warning
        result = align_runs(run_a, run_b, seed=0, root=results_root, progress=False)
    out = result.aligned_run
    assert out == paths.aligned_run_dir(paths.aligned_name(run_a.name, run_b.name, 0), results_root)
    prov = json.loads((out / paths.PROVENANCE).read_text())
    assert prov["run_a"] == str(run_a) and prov["run_b"] == str(run_b)
    assert sorted(prov["permutations"]["P_0"][0]) == list(range(32))
    cfg_b, state_b = load_final(run_b)
    cfg_p, state_p = load_final(out)
    assert cfg_p == cfg_b == type(cfg_b).from_dict(json.loads((out / paths.CONFIG).read_text()))

    def net(state):
        model = build_model("mlp", (1, 28, 28), 10, depth=2, width=32).double()
        model.load_state_dict({k: v.double() for k, v in state.items()})
        return model

    x = torch.rand(32, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(net(state_p)(x), net(state_b)(x), rtol=1e-10, atol=1e-10)
    assert not torch.equal(state_p["layers.0.weight"], state_b["layers.0.weight"])
    # π(B) is B on the data too, and it is closer to A (coordinate ascent never loses ground).
    assert list(result.before.acc_b) == list(result.after.acc_b)
    assert np.allclose(result.before.loss_b, result.after.loss_b, rtol=1e-5)
    assert result.distance_after < result.distance_before
    table = result.table()
    assert list(table.split) == ["train", "test"] and table.notna().all().all()


def test_aligning_a_permuted_copy_gives_exactly_zero_barrier(different_init_pair, results_root):
    from experiments import permutations
    from experiments.align import align_runs
    from experiments.interpolate import load_final
    from lmc.config import replace, save_json

    cfg_a, state_a = load_final(different_init_pair[0])
    spec = permutations.spec_for("mlp", state_a)
    sigma = permutations.random_perms(spec, np.random.default_rng(5))
    copy = paths.run_dir("permuted-copy-of-a", results_root)
    copy.mkdir(parents=True, exist_ok=True)
    cfg_copy = replace(cfg_a, init_seed=7)  # says it came from elsewhere: the path must stay quiet
    save_json(cfg_copy.to_dict(), copy / paths.CONFIG)
    from experiments.training import checkpoints

    checkpoints.save(copy / paths.FINAL, {"config": cfg_copy.to_dict(), "model": permutations.apply(spec, sigma, state_a)})

    result = align_runs(different_init_pair[0], copy, seed=1, root=results_root, progress=False)
    assert np.array_equal(result.matching.perms["P_0"], permutations.inverse(sigma)["P_0"])
    assert (result.after.error_barrier == 0).all() and (result.after.loss_barrier == 0).all()
    assert result.distance_after == 0.0
    assert (result.before.error_barrier > 0).all()  # the copy's units really were shuffled


def _cli(*argv):
    from app.cli import main

    return main(list(argv))


def test_cli_prints_before_and_after(different_init_pair, results_root, capsys):
    run_a, run_b = different_init_pair
    assert _cli("align", str(run_a), str(run_b), "--seed", "2", "--splits", "test", "--results",
                str(results_root), "--quiet") == 0
    out = capsys.readouterr().out
    assert "error_barrier_pct_before" in out and "error_barrier_pct_after" in out and "sweep" in out
    assert paths.aligned_name(run_a.name, run_b.name, 2) in out


@pytest.mark.parametrize("overrides, message", [
    (dict(width=48), "differ in width"),
    (dict(depth=3), "differ in depth"),
    (dict(model="attention", kernel=4, heads=1, head_dim=4, embed_dim=8), "differ in model"),
])
def test_runs_of_different_architectures_are_refused_and_nothing_is_written(
        different_init_pair, mnist_small, tmp_path, capsys, overrides, message):
    import shutil

    from experiments.training import train

    root = tmp_path / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    run_a = train(small_config(epochs=1), root, progress=False)
    run_b = train(small_config(epochs=1, init_seed=1, **overrides), root, progress=False)
    assert _cli("align", str(run_a), str(run_b), "--results", str(root), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not paths.aligned_dir(root).exists() and not paths.interpolations_dir(root).exists()


@pytest.mark.parametrize("cfg, message", [
    (dict(model="attention", kernel=4, heads=1, head_dim=4, embed_dim=8), "'attention' has no permutation spec"),
    (dict(model="linear", depth=1), "no hidden units"),
])
def test_families_without_hidden_units_to_permute_are_refused(mnist_small, tmp_path, capsys, cfg, message):
    import shutil

    from experiments.training import train

    root = tmp_path / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    run_a = train(small_config(epochs=1, **cfg), root, progress=False)
    run_b = train(small_config(epochs=1, init_seed=1, **cfg), root, progress=False)
    assert _cli("align", str(run_a), str(run_b), "--results", str(root), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not paths.aligned_dir(root).exists()


ALIGN_GRID = """
artefact = "tiny_alignment"
title = "tiny alignment"
layout = "alignment"
pairing = "different_init"
axes = ["widths"]

[base]
model = "mlp"
dataset = "mnist_small"
batch_size = 64
lr = 0.05

[scales.quick]
notes = "two epochs on 600 real digits"
config = { epochs = 2 }

[scales.paper]
notes = "the same"
config = { epochs = 2 }

[[widths]]
label = "width 24"
width = 24
"""


def test_a_different_init_sweep_trains_distinct_inits_and_reports_before_and_after(tmp_path, mnist_small):
    import shutil
    import subprocess
    import sys

    import pandas as pd

    from app.sweep import plan_tasks
    from experiments.grids import load_grid

    (tmp_path / "grid.toml").write_text(ALIGN_GRID)
    tasks = plan_tasks(load_grid(str(tmp_path / "grid.toml"), "quick"), 2)
    inits = [(t["config"]["init_seed"], t["init_seed_b"]) for t in tasks]
    assert inits == [(0, 1), (2, 3)]  # no two runs share an initialisation
    assert all(t["aligned_interpolation"] != t["interpolation"] for t in tasks)

    root = tmp_path / "results"
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    result = subprocess.run([sys.executable, "-m", "app.cli", "reproduce", str(tmp_path / "grid.toml"), "--seeds",
                             "2", "--results", str(root)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "UserWarning" not in result.stderr  # different inits: the aligned path is quiet
    out = paths.sweep_dir("grid", "quick", root)
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2 * 2 * 2 and set(df.alignment) == {"before", "after"}  # pairs x alignment x splits
    before = df[df.alignment == "before"].set_index(["pair", "split"])
    after = df[df.alignment == "after"].set_index(["pair", "split"])
    assert (before.acc_b == after.acc_b).all()  # π(B) is B: same endpoint
    assert (before.init_seed != before.init_seed_b).all()
    tidy = pd.read_csv(out / "tiny_alignment.csv")
    assert set(tidy.alignment) == {"before", "after"} and {"ci_low", "ci_high"} <= set(tidy.columns)
    header = (out / "tiny_alignment.md").read_text().splitlines()[0]
    assert "before / test" in header and "after / test" in header
    assert (out / "tiny_alignment.png").exists() and (out / "curves.png").exists()
