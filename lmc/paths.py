"""Every file and folder name of the study, in one place.

No other module builds a path by hand: they ask this one. The layout follows the data flow:

    <results>/betons/<dataset>/<split>.beton (+ <split>.manifest.json)
    <results>/runs/<run-name>/            config.json, metrics.jsonl, checkpoints/, final.pt, ...
    <results>/interpolations/<name>/      curve.csv, curve.parquet, barriers.json
    <results>/demo/                       barriers.csv, barriers.md, error_vs_alpha.png

Two settings move the roots (both plain environment variables, so tests and CI can point
them anywhere): ``LMC_RESULTS`` (default ``<repo>/results``) and ``LMC_DATA_ROOT`` (where
the standard distribution files of the datasets live; default ``<repo>/../shared/datasets``).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# File names inside a run directory.
CONFIG = "config.json"
METRICS = "metrics.jsonl"
PROVENANCE = "provenance.json"
DIGEST = "loader_digest.json"
CHECKPOINTS = "checkpoints"
FINAL = "final.pt"
DONE = "DONE"

# File names inside an interpolation directory.
CURVE_CSV = "curve.csv"
CURVE_PARQUET = "curve.parquet"
BARRIERS = "barriers.json"


def data_root() -> Path:
    """Folder holding the datasets' standard distribution files (never inside the repo)."""
    env = os.environ.get("LMC_DATA_ROOT")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "datasets"


def results_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding everything the study writes."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("LMC_RESULTS")
    return Path(env).expanduser() if env else REPO_ROOT / "results"


def beton_dir(dataset: str, root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "betons" / dataset


def beton_path(dataset: str, split: str, root: str | os.PathLike | None = None) -> Path:
    return beton_dir(dataset, root) / f"{split}.beton"


def manifest_path(beton: str | os.PathLike) -> Path:
    """The manifest lives beside its .beton: ``train.beton`` -> ``train.manifest.json``."""
    beton = Path(beton)
    return beton.with_name(beton.stem + ".manifest.json")


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "runs"


def run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return runs_dir(root) / name


def lock_path(run: str | os.PathLike) -> Path:
    """Lock file of a run, beside (not inside) its directory so it never lands in results."""
    run = Path(run)
    return run.parent / ".locks" / f"{run.name}.lock"


def checkpoint_path(run: str | os.PathLike, epoch: int) -> Path:
    return Path(run) / CHECKPOINTS / f"epoch_{epoch:04d}.pt"


def spawn_checkpoint_path(run: str | os.PathLike, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step_{step:07d}.pt"


def interpolations_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "interpolations"


def interpolation_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return interpolations_dir(root) / name


def demo_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "demo"


