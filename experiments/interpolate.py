"""Interpolate two trained runs: Θ(α) = (1−α)·Θ_A + α·Θ_B, error and loss at each α, barriers.

The two runs must be a pair: the same settings, only their noise apart (``NOISE_FIELDS``).
Anything else (another model, optimiser, learning rate, init seed) is refused unless the
caller allows those differences, which ``barriers.json`` then records.

Each split is decoded once and kept in memory for all α, so the cost is T forward passes
over the split plus T cheap weight averages. The normalised barrier (Eq. 2) always divides by
the endpoints' *test* accuracy: when the test split is not among the splits interpolated, its
two endpoints are evaluated anyway.

Output (``lmc.paths.interpolation_dir``, named by both runs, T and the splits):
``curve.csv`` / ``curve.parquet`` (one row per split and α) and ``barriers.json`` (one record
per split), each row carrying its provenance.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from experiments import barriers as barrier_lib
from experiments.config import TrainConfig
from lmc import paths
from lmc.config import config_hash, replace, save_json, to_dict
from lmc.errors import UserError

# Fields that may differ between the two endpoints of a pair: the noise, and nothing else.
NOISE_FIELDS = ("order_seed", "aug_seed", "replicate", "parent_order_seed", "parent_aug_seed")


class InterpolationError(UserError):
    """Two runs that cannot be interpolated (unfinished, different shapes or settings)."""


def load_final(run: str | Path) -> tuple[TrainConfig, dict]:
    from experiments.training.checkpoints import DamagedCheckpoint, load

    run = Path(run)
    final = run / paths.FINAL
    if not final.exists():
        raise InterpolationError(f"{run}: no {paths.FINAL}; the run is unfinished or not a run directory "
                                 f"(train it with `lmc train` / `lmc train-pair`)")
    try:
        ckpt = load(final)
    except DamagedCheckpoint as exc:
        raise InterpolationError(f"{exc}; remove {run} and train it again") from None
    return TrainConfig.from_dict(ckpt["config"]), ckpt["model"]


def setting_differences(cfg_a: TrainConfig, cfg_b: TrainConfig) -> dict[str, list]:
    """The fields other than the noise in which two configs differ: {field: [A's, B's]}."""
    a, b = to_dict(cfg_a), to_dict(cfg_b)
    return {k: [a[k], b[k]] for k in a if k not in NOISE_FIELDS and a[k] != b[k]}


def check_compatible(cfg_a: TrainConfig, state_a: dict, cfg_b: TrainConfig, state_b: dict,
                     allow_different=()) -> dict[str, list]:
    """Refuse a pair that is not one; return the differences that ``allow_different`` permits
    (``True``: any; a tuple of field names: those)."""
    for key in state_a:
        if key not in state_b:
            raise InterpolationError(f"parameter {key!r} of run A is missing in run B")
        if state_a[key].shape != state_b[key].shape:
            raise InterpolationError(f"parameter {key!r} differs in shape: A {tuple(state_a[key].shape)} "
                                     f"vs B {tuple(state_b[key].shape)}")
    extra = set(state_b) - set(state_a)
    if extra:
        raise InterpolationError(f"parameter {sorted(extra)[0]!r} of run B is missing in run A")
    if cfg_a.dataset != cfg_b.dataset:
        raise InterpolationError(f"runs were trained on different datasets: {cfg_a.dataset} vs {cfg_b.dataset}")
    diff = setting_differences(cfg_a, cfg_b)
    refused = {k: v for k, v in diff.items() if allow_different is not True and k not in allow_different}
    if refused:
        shown = ", ".join(f"{k} {v[0]!r} vs {v[1]!r}" for k, v in refused.items())
        raise InterpolationError(f"the runs are not a pair: they differ in {shown}, not only in their noise "
                                 f"({', '.join(NOISE_FIELDS)}); pass --allow-different to interpolate them anyway "
                                 f"(barriers.json records it)")
    return diff


def lerp_state(state_a: dict, state_b: dict, alpha: float) -> dict:
    """Layer by layer, weights and biases; integer buffers (counters) are taken from A."""
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        out[key] = torch.lerp(a, b, alpha) if a.is_floating_point() else a.clone()
    return out


def interpolate_runs(run_a: str | Path, run_b: str | Path, *, num_alphas: int = 11,
                     splits: tuple[str, ...] = ("train", "test"), root=None, device="auto",
                     write: bool = True, progress: bool = True, allow_different=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate the straight path between two runs; return (curve rows, barrier rows)."""
    from tqdm.auto import tqdm

    from experiments.training import build_model, resolve_device, set_deterministic, task_for
    from lmc.provenance import git_revision

    splits = tuple(splits)
    if not splits or any(s not in ("train", "test") for s in splits):
        raise InterpolationError(f"splits {splits!r}: choose from train, test")
    if write:
        paths.check_layout(root)
    run_a, run_b = Path(run_a), Path(run_b)
    cfg_a, state_a = load_final(run_a)
    cfg_b, state_b = load_final(run_b)
    allowed = check_compatible(cfg_a, state_a, cfg_b, state_b, allow_different)
    dev = resolve_device(device)
    set_deterministic()
    alphas = barrier_lib.alphas(num_alphas)
    task = task_for(cfg_a, root, dev)
    model = build_model(cfg_a, **task.model_args).to(dev)

    def evaluate(alpha: float, split: str) -> dict:
        model.load_state_dict(lerp_state(state_a, state_b, alpha))
        return task.evaluate(model, split)

    curve = []
    for split in splits:
        for alpha in tqdm(alphas, desc=f"interpolate {split}", leave=False, disable=not progress):
            m = evaluate(float(alpha), split)
            curve.append({"split": split, "alpha": float(alpha), "loss": m["loss"], "error": m["error"],
                          "accuracy": m["accuracy"]})
    curve_df = pd.DataFrame(curve)
    if "test" in splits:
        test_rows = curve_df[curve_df.split == "test"].sort_values("alpha")
        test_acc = (test_rows.accuracy.iloc[0], test_rows.accuracy.iloc[-1])
    else:  # Eq. 2 divides by the endpoints' test accuracy, whichever splits are interpolated
        test_acc = (evaluate(0.0, "test")["accuracy"], evaluate(1.0, "test")["accuracy"])

    shared = replace(cfg_a, **{k: 0 for k in NOISE_FIELDS})
    provenance = {
        "run_a": run_a.name, "run_b": run_b.name, "init_seed": cfg_a.init_seed,
        "order_seed_a": cfg_a.order_seed, "order_seed_b": cfg_b.order_seed,
        "aug_seed_a": cfg_a.aug_seed, "aug_seed_b": cfg_b.aug_seed,
        "config_hash": config_hash(shared), "model": cfg_a.model, "depth": cfg_a.depth,
        "optimizer": cfg_a.optimizer, "lr": cfg_a.lr, "dataset": cfg_a.dataset, "width": cfg_a.width,
        "slope": cfg_a.slope, "warmup_epochs": cfg_a.warmup_epochs, "batch_size": cfg_a.batch_size,
        "epochs": cfg_a.epochs, "augment": cfg_a.augment, "spawn_step": cfg_a.spawn_step,
        "data_manifest": task.describe_data()["data_manifest"], "git_revision": git_revision(),
        "torch": torch.__version__, "device": dev.type, "splits": "+".join(splits),
    }
    rows = []
    for split, group in curve_df.groupby("split", sort=False):
        group = group.sort_values("alpha")
        b = barrier_lib.barriers(group.alpha, group.error, group.loss, test_acc)
        rows.append({"split": split, **b, **provenance})
    barrier_df = pd.DataFrame(rows)
    curve_df = curve_df.assign(**provenance)

    if write:
        from lmc.io import atomic_path

        out = paths.interpolation_dir(paths.interpolation_name(run_a.name, run_b.name, num_alphas, splits), root)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / paths.CURVE_CSV) as tmp:
            curve_df.to_csv(tmp, index=False)
        with atomic_path(out / paths.CURVE_PARQUET) as tmp:
            curve_df.to_parquet(tmp, index=False)
        save_json({"barriers": barrier_df.to_dict(orient="records"), "splits": list(splits),
                   "allowed_differences": allowed}, out / paths.BARRIERS)
    return curve_df, barrier_df
