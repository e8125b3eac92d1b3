"""Configs, seeds, barriers and the command line: fast tests, no training."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from lmc import seeds
from lmc.config import ConfigError, apply_overrides, config_hash, from_dict, to_dict


def test_strict_overrides():
    from experiments.config import TrainConfig

    cfg = apply_overrides(TrainConfig(), ["lr=0.01", "depth=8", "model=linear", "warmup_epochs=2"])
    assert (cfg.lr, cfg.depth, cfg.model, cfg.warmup_epochs) == (0.01, 8, "linear", 2.0)
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        apply_overrides(TrainConfig(), ["lrr=0.1"])
    with pytest.raises(ConfigError, match="depth: expected an integer"):
        apply_overrides(TrainConfig(), ["depth=2.5"])
    with pytest.raises(ConfigError, match="lr=-0.1 is invalid"):
        apply_overrides(TrainConfig(), ["lr=-0.1"])
    with pytest.raises(ConfigError, match="unknown model 'resnet'; valid: linear, mlp"):
        apply_overrides(TrainConfig(), ["model=resnet"])
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(TrainConfig, {"depth": "2"})
    with pytest.raises(ConfigError, match="unknown config keys"):
        from_dict(TrainConfig, {"nope": 1})


def test_config_round_trip_and_hash():
    from experiments.config import TrainConfig

    cfg = TrainConfig(model="linear", depth=8, optimizer="adam", lr=0.005)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    # The hash covers only non-default fields: a default-valued config hashes like the default.
    assert config_hash(TrainConfig(lr=0.1)) == config_hash(TrainConfig())
    assert config_hash(cfg) != config_hash(TrainConfig())
    assert cfg.run_name().startswith("linear8-adam-lr0.005-")
    # Missing keys (a config written before a field existed) take the default.
    assert from_dict(TrainConfig, {"lr": 0.005}).lr == 0.005


def test_an_int_for_a_float_field_is_the_same_config_with_the_same_name():
    """TrainConfig(warmup_epochs=1) once kept the int, while its JSON read back held 1.0: one run,
    two names, trained twice."""
    from experiments.config import TrainConfig
    from lmc.config import replace

    given = TrainConfig(warmup_epochs=1, epochs=4, lr=1)
    assert type(given.warmup_epochs) is float and type(given.lr) is float and type(given.epochs) is int
    same = [TrainConfig(warmup_epochs=1.0, epochs=4, lr=1.0), from_dict(TrainConfig, to_dict(given)),
            replace(TrainConfig(epochs=4, lr=1.0), warmup_epochs=1)]
    assert {c.run_name() for c in same} == {given.run_name()}


def test_model_names_match_the_registry():
    from experiments.config import MODEL_NAMES
    from experiments.models import MODEL_NAMES as REGISTRY

    assert set(MODEL_NAMES) == set(REGISTRY)


def test_augment_names_match_the_pipelines():
    from experiments.config import AUGMENTATIONS
    from experiments.training.language_task import TEXT_AUGMENTATIONS
    from pipelines import AUGMENTATIONS as PRESETS

    # Every image preset, plus the text loader's window offset: nothing more, nothing less.
    assert set(AUGMENTATIONS) == set(PRESETS) | set(TEXT_AUGMENTATIONS)


def test_seeds_are_separated_by_purpose_and_well_mixed():
    assert seeds.derive(1, "order") != seeds.derive(1, "aug") != seeds.derive(1, "init")
    assert seeds.derive(1, "order") == seeds.derive(1, "order")
    # FFCV uses default_rng(seed + epoch): nearby user seeds must not land next to each other.
    derived = [seeds.ffcv_order_seed(s) for s in range(100)]
    gaps = np.abs(np.subtract.outer(derived, derived))[np.triu_indices(100, 1)]
    assert gaps.min() > 1000
    assert all(0 <= d < 2**31 for d in derived)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            seeds.check_seed(bad)


def test_barriers_by_hand():
    from experiments.barriers import barriers

    alpha = np.linspace(0, 1, 5)
    error = np.array([0.10, 0.30, 0.50, 0.30, 0.20])
    loss = np.array([0.3, 0.9, 1.5, 0.8, 0.5])
    b = barriers(alpha, error, loss, test_acc_endpoints=(0.8, 0.9))
    assert b["error_barrier"] == pytest.approx(0.50 - 0.15)
    assert b["error_barrier_pct"] == pytest.approx(35.0)
    assert b["normalized_barrier"] == pytest.approx(0.35 / 0.85)
    assert b["loss_barrier"] == pytest.approx(1.5 - 0.4)
    assert b["max_deviation"] == pytest.approx(0.50 - 0.15)
    assert b["alpha_at_max_error"] == 0.5
    assert not b["connected"]
    flat = barriers(alpha, np.full(5, 0.1), np.full(5, 0.2))
    assert flat["error_barrier"] == 0 and flat["loss_barrier"] == 0 and flat["connected"]
    with pytest.raises(ValueError, match="endpoints"):
        barriers(alpha[1:], error[1:], loss[1:])


def test_paper_references():
    from analysis.paper import paper_reference

    assert paper_reference("linear", 8, "adam", 0.005, "test") == ("Table 1, 8-Layer BS=1024, ADAM 0.005", 68.22)
    assert paper_reference("linear", 8, "sgd", 0.01, "train") == ("Table 1, 8-Layer BS=1024, SGD 0.01", 0.00)
    assert paper_reference("mlp", 2, "sgd", 0.1, "test") == ("Table 2, SGD ↑lr", 0.05)
    assert paper_reference("mlp", 2, "adam", 0.005, "train", warmup=True) == ("Table 2, ADAM ↑lr + W-up", 0.17)


def lmc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("args, needle", [
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("train", "--model", "resnet"), "invalid choice: 'resnet' (choose from"),
    (("train", "--optimizer", "rmsprop"), "invalid choice: 'rmsprop'"),
    (("train", "--lr", "-0.1"), "lr=-0.1 is invalid: expected a positive learning rate"),
    (("train", "--lr", "0"), "lr=0.0 is invalid"),
    (("train", "--set", "nope=1"), "unknown config key 'nope'"),
    (("train-pair", "--seeds-a", "1,x"), "expected ORDER_SEED,AUG_SEED"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    results = tmp_path / "results"
    proc = lmc(*args, "--results", str(results)) if args[0] != "frobnicate" else lmc(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not results.exists()


def test_every_subcommand_has_help():
    from app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"demo", "beton", "loader", "train", "train-pair", "interpolate", "models"} <= set(sub.choices)
    for name in sub.choices:
        proc = lmc(name, "--help")
        assert proc.returncode == 0 and "usage: lmc" in proc.stdout, name
