"""Interpolate two trained runs: Θ(α) = (1−α)·Θ_A + α·Θ_B, error and loss at each α, barriers.

Each split is decoded once (``pipelines.load_split``) and kept in memory for all α, so the
cost is T forward passes over the split plus T cheap weight averages.

Output (``lmc.paths.interpolation_dir``): ``curve.csv`` / ``curve.parquet`` (one row per split
and α) and ``barriers.json`` (one record per split), each row carrying its provenance.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import torch

from experiments import barriers as barrier_lib
from experiments.config import TrainConfig
from lmc import paths
from lmc.errors import UserError
from lmc.config import config_hash, save_json

# Fields that may differ between the two endpoints of a pair: the noise, and nothing else.
NOISE_FIELDS = ("order_seed", "aug_seed", "replicate", "parent_order_seed", "parent_aug_seed")


class InterpolationError(UserError):
    """Two runs that cannot be interpolated (unfinished, different shapes)."""


def load_final(run: str | Path) -> tuple[TrainConfig, dict]:
    run = Path(run)
    final = run / paths.FINAL
    if not final.exists():
        raise InterpolationError(f"{run}: no {paths.FINAL}; the run is unfinished or not a run directory "
                                 f"(train it with `lmc train` / `lmc train-pair`)")
    ckpt = torch.load(final, map_location="cpu", weights_only=False)
    return TrainConfig.from_dict(ckpt["config"]), ckpt["model"]


def check_compatible(cfg_a: TrainConfig, state_a: dict, cfg_b: TrainConfig, state_b: dict, *,
                     allow_different_init: bool = False) -> None:
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
    # Different inits are the point of permutation alignment (experiments.align), which says so.
    if cfg_a.init_seed != cfg_b.init_seed and not allow_different_init:
        warnings.warn(f"the runs have different init seeds ({cfg_a.init_seed} vs {cfg_b.init_seed}): this is "
                      f"not the paper's LMC setting, which trains both from one initialisation", stacklevel=2)


def lerp_state(state_a: dict, state_b: dict, alpha: float) -> dict:
    """Layer by layer, weights and biases; integer buffers (counters) are taken from A."""
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        out[key] = torch.lerp(a, b, alpha) if a.is_floating_point() else a.clone()
    return out


def interpolate_runs(run_a: str | Path, run_b: str | Path, *, num_alphas: int = 11,
                     splits: tuple[str, ...] = ("train", "test"), root=None, device="auto",
                     write: bool = True, progress: bool = True,
                     allow_different_init: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate the straight path between two runs; return (curve rows, barrier rows).

    ``allow_different_init``: no warning when the init seeds differ (``lmc align``'s pairs)."""
    from tqdm.auto import tqdm

    from lmc.manifest import manifest_hash, read_manifest
    from experiments.train import build_model, evaluate, resolve_device, set_deterministic
    from lmc.provenance import git_revision
    from pipelines import load_split

    if write:
        paths.check_layout(root)
    run_a, run_b = Path(run_a), Path(run_b)
    cfg_a, state_a = load_final(run_a)
    cfg_b, state_b = load_final(run_b)
    check_compatible(cfg_a, state_a, cfg_b, state_b, allow_different_init=allow_different_init)
    dev = resolve_device(device)
    set_deterministic()
    alphas = barrier_lib.alphas(num_alphas)

    betons = {s: paths.beton_path(cfg_a.dataset, s, root) for s in splits}
    # Every split is normalised with the training split's statistics, as during training.
    norm = read_manifest(paths.beton_path(cfg_a.dataset, "train", root))
    h, w, c = norm["image_shape"]
    model = build_model(cfg_a, (c, h, w), norm["num_classes"]).to(dev)
    curve = []
    for split, beton in betons.items():
        images, labels = load_split(beton, device=dev)  # decoded once for all α
        for alpha in tqdm(alphas, desc=f"interpolate {split}", leave=False, disable=not progress):
            model.load_state_dict(lerp_state(state_a, state_b, float(alpha)))
            m = evaluate(model, images, labels, norm)
            curve.append({"split": split, "alpha": float(alpha), "loss": m["loss"], "error": m["error"],
                          "accuracy": m["accuracy"]})
    curve_df = pd.DataFrame(curve)

    test_rows = curve_df[curve_df.split == "test"].sort_values("alpha")
    test_acc = (test_rows.accuracy.iloc[0], test_rows.accuracy.iloc[-1]) if len(test_rows) else None
    provenance = {
        "run_a": run_a.name, "run_b": run_b.name, "init_seed": cfg_a.init_seed,
        "order_seed_a": cfg_a.order_seed, "order_seed_b": cfg_b.order_seed,
        "aug_seed_a": cfg_a.aug_seed, "aug_seed_b": cfg_b.aug_seed,
        "config_hash": config_hash(_shared(cfg_a)), "model": cfg_a.model, "depth": cfg_a.depth,
        "optimizer": cfg_a.optimizer, "lr": cfg_a.lr, "dataset": cfg_a.dataset, "width": cfg_a.width,
        "slope": cfg_a.slope, "warmup_epochs": cfg_a.warmup_epochs, "batch_size": cfg_a.batch_size,
        "epochs": cfg_a.epochs, "augment": cfg_a.augment, "spawn_step": cfg_a.spawn_step,
        "data_manifest": manifest_hash(betons[splits[0]]), "git_revision": git_revision(),
        "torch": torch.__version__,
    }
    rows = []
    for split, group in curve_df.groupby("split", sort=False):
        group = group.sort_values("alpha")
        b = barrier_lib.barriers(group.alpha, group.error, group.loss, test_acc)
        rows.append({"split": split, **b, **provenance})
    barrier_df = pd.DataFrame(rows)
    curve_df = curve_df.assign(**{k: v for k, v in provenance.items()})

    if write:
        out = paths.interpolation_dir(paths.interpolation_name(run_a.name, run_b.name, num_alphas), root)
        out.mkdir(parents=True, exist_ok=True)
        from lmc.io import atomic_path

        with atomic_path(out / paths.CURVE_CSV) as tmp:
            curve_df.to_csv(tmp, index=False)
        with atomic_path(out / paths.CURVE_PARQUET) as tmp:
            curve_df.to_parquet(tmp, index=False)
        save_json({"barriers": barrier_df.to_dict(orient="records")}, out / paths.BARRIERS)
    return curve_df, barrier_df


def _shared(cfg: TrainConfig) -> TrainConfig:
    """The pair's common config: the endpoint's config with its own noise fields reset."""
    from lmc.config import replace

    return replace(cfg, **{k: 0 for k in NOISE_FIELDS})
