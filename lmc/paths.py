"""Every file and folder name of the study, in one place.

No other module builds a path by hand: they ask this one. The layout follows the data flow:

    <results>/betons/<dataset>/<split>.beton (+ <split>.manifest.json)
    <results>/runs/<run-name>/            config.json, metrics.jsonl, checkpoints/, final.pt, ...
    <results>/interpolations/<name>/      curve.csv, curve.parquet, barriers.json
    <results>/demo/                       barriers.csv, barriers.md, error_vs_alpha.png
    <results>/reproduce/<grid>/<scale>/   tables, figures, summary of `lmc reproduce`
    <results>/REPRODUCTION.md             `lmc report`
    <results>/LAYOUT_VERSION              the layout's version stamp (``check_layout``)

Two settings move the roots (both plain environment variables, so tests and CI can point
them anywhere): ``LMC_RESULTS`` (default ``<repo>/results``) and ``LMC_DATA_ROOT`` (where
the standard distribution files of the datasets live; default ``<repo>/../shared/datasets``).
"""
from __future__ import annotations

import os
from pathlib import Path

from lmc.errors import UserError

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


class ResultsRootError(UserError):
    """The results root names a file, or lies under one."""


def results_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding everything the study writes (created on first write). A path that is a
    file, or lies under one, is refused here, before any command starts writing into it."""
    if root is not None:
        path, setting = Path(root).expanduser(), "--results"
    elif os.environ.get("LMC_RESULTS"):
        path, setting = Path(os.environ["LMC_RESULTS"]).expanduser(), "LMC_RESULTS"
    else:
        path, setting = REPO_ROOT / "results", "the default results folder"
    # The nearest part of the path that exists must be a folder (a few stat calls).
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ResultsRootError(f"{setting} {path} {what}, not a folder; point --results (or LMC_RESULTS) at a "
                               f"folder, new or used by lmc before")
    return path


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


def interpolation_name(run_a: str, run_b: str, num_alphas: int) -> str:
    """An interpolation is named by its two runs and its number of α values."""
    return f"{run_a}__{run_b}-T{num_alphas}"


def interpolation_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return interpolations_dir(root) / name


def reproduce_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "reproduce"


def sweep_dir(grid: str, scale: str, root: str | os.PathLike | None = None) -> Path:
    return reproduce_dir(root) / grid / scale


def report_path(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "REPRODUCTION.md"


def demo_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "demo"




# -- the layout's version ---------------------------------------------------------------------

# Bump when the results layout changes in a way older code cannot read (or newer code must not
# mix with): a results root stamped with another version is refused by every command that
# writes results (train, interpolate, demo, reproduce, report).
LAYOUT_VERSION = "1"
LAYOUT_FILE = "LAYOUT_VERSION"


class IncompatibleResultsError(UserError):
    """A results directory written by a version of this code with another layout."""


def layout_file(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / LAYOUT_FILE


def check_layout(root: str | os.PathLike | None = None) -> Path:
    """Stamp a new results root with LAYOUT_VERSION; refuse one stamped with another version."""
    from lmc.io import atomic_write_text

    stamp = layout_file(root)
    if stamp.exists():
        text = stamp.read_text().strip()
        found = text.split()[-1] if text else "?"
        if found != LAYOUT_VERSION:
            raise IncompatibleResultsError(
                f"{results_root(root)} was written with results layout version {found}, this code uses "
                f"version {LAYOUT_VERSION}; use a fresh directory (--results DIR or LMC_RESULTS) or the "
                f"version of lmc that wrote it")
    else:
        atomic_write_text(stamp, f"lmc-results-layout {LAYOUT_VERSION}\n")
    return stamp
