"""Every file and folder name of the study, in one place.

No other module builds a path by hand: they ask this one. The layout follows the data flow:

    <results>/betons/<dataset>/<split>.beton (+ <split>.manifest.json)
    <results>/corpora/<name>.txt          text corpora written from installed packages
    <results>/runs/<run-name>/            config.json, metrics.jsonl, checkpoints/, final.pt, ...
    <results>/interpolations/<name>/      curve.csv, curve.parquet, barriers.json
    <results>/aligned/<name>/             a run-like folder: run B permuted to match run A (`lmc align`)
    <results>/masks/<name>/               a run-like folder: a mask made from a run (magnitude pruning)
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
MASK = "mask.pt"          # a pruned run's final mask (prune=platon), for masked retraining
DONE = "DONE"

# File names inside an interpolation directory.
CURVE_CSV = "curve.csv"
CURVE_PARQUET = "curve.parquet"
BARRIERS = "barriers.json"

# File names inside a sweep's folder (``sweep_dir``) and the demo's folder (``demo_dir``).
SWEEP_PLAN = "plan.json"
SWEEP_EVENTS = "events.jsonl"
SWEEP_RESULTS = "results.parquet"
SWEEP_SUMMARY = "summary.json"
SUBMITIT_LOGS = "submitit"
DEMO_BARRIERS = "barriers"        # a table stem: .csv, .md, .tex beside each other
DEMO_CURVES = "curves.csv"
DEMO_FIGURE = "error_vs_alpha"    # a figure stem: .png, .pdf
EMERGENCE_TABLE = "emergence"      # a table stem
EMERGENCE_PAIRS = "pairs.csv"      # every (spawn step, seed pair, split) barrier row
EMERGENCE_FIGURE = "emergence"     # a figure stem
GPT_LMC_TABLE = "gpt_lmc"                    # a table stem (`lmc reproduce gpt_lmc`)
GPT_LMC_FIGURE = "gpt_lmc_loss_vs_alpha"     # a figure stem
GPT_LMC_CURVES = "curves.parquet"            # every pair's per-α rows, with its row label
GPT2_BPE = "gpt2.tiktoken"                   # GPT-2's BPE ranks, in tiktoken's format


def table_files(stem: str | os.PathLike) -> dict[str, Path]:
    """The files of one table: CSV, Markdown and LaTeX beside each other."""
    return {suffix: Path(str(stem) + suffix) for suffix in (".csv", ".md", ".tex")}


def figure_files(stem: str | os.PathLike) -> dict[str, Path]:
    """The files of one figure: PNG and PDF beside each other."""
    return {suffix: Path(str(stem) + suffix) for suffix in (".png", ".pdf")}


def split_file(folder: str | os.PathLike, split: str, suffix: str) -> Path:
    """``<folder>/<split><suffix>``: a split's .beton or manifest in a dataset folder."""
    return Path(folder) / f"{split}{suffix}"


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
    return split_file(beton_dir(dataset, root), split, ".beton")


def corpus_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """A plain-text corpus materialised from an installed package (``beton_builders/text.py``)."""
    return results_root(root) / "corpora" / f"{name}.txt"


def gpt2_bpe_file() -> Path:
    """GPT-2's BPE ranks file when a command is not given one: ``<data root>/gpt2.tiktoken``, or
    ``<data root>/../assets/gpt2.tiktoken`` (where the shared test data keeps it); the first
    when neither exists, for the message that asks for it. Never downloaded."""
    candidates = [data_root() / GPT2_BPE, data_root().parent / "assets" / GPT2_BPE]
    return next((c for c in candidates if c.is_file()), candidates[0])


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


def interpolation_name(run_a: str, run_b: str, num_alphas: int, splits=("train", "test")) -> str:
    """An interpolation is named by its two runs, its number of α values and its splits, so a
    train-only result is never taken for a complete one."""
    return f"{run_a}__{run_b}-T{num_alphas}-{'+'.join(splits)}"


def interpolation_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return interpolations_dir(root) / name


def aligned_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "aligned"


def aligned_name(run_a: str, run_b: str, seed: int) -> str:
    """Run B permuted to match run A; the seed orders weight matching's visits, so it names the result."""
    return f"{run_b}__to__{run_a}-seed{seed}"


def aligned_run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return aligned_dir(root) / name


def masks_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "masks"


def mask_name(run: str, method: str, ratio: float) -> str:
    """A mask made from a run's final weights by ``method`` (e.g. magnitude) at a remaining ratio."""
    return f"{run}__{method}-r{ratio:g}"


def mask_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """A run-like folder holding one mask: config.json (the run it fits), ``MASK``, provenance.json;
    a config names it as ``mask_from=mask:<name>``."""
    return masks_dir(root) / name


def reproduce_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "reproduce"


def sweep_dir(grid: str, scale: str, root: str | os.PathLike | None = None) -> Path:
    return reproduce_dir(root) / grid / scale


def report_path(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "REPRODUCTION.md"


def demo_dir(root: str | os.PathLike | None = None) -> Path:
    return results_root(root) / "demo"


def emergence_dir(config_name: str, spawn_steps, seeds: int, root: str | os.PathLike | None = None) -> Path:
    """``lmc emergence``'s outputs for one config, its spawn steps and its number of seed pairs."""
    import hashlib

    steps = hashlib.sha256(",".join(map(str, spawn_steps)).encode()).hexdigest()[:8]
    return results_root(root) / "emergence" / f"{config_name}-k{steps}-S{seeds}"




# -- the layout's version ---------------------------------------------------------------------

# Bump when the results layout changes in a way older code cannot read (or newer code must not
# mix with): a results root stamped with another version is refused by every command that
# writes results (train, interpolate, demo, reproduce, report).
# 2: the device left run names (it is provenance), interpolation names carry their splits,
#    checkpoints carry checksums.
LAYOUT_VERSION = "2"
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
