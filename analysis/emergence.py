"""The emergence table and figure (``lmc emergence``): barrier vs spawn step, with 95% intervals.

Reads the barrier rows of every (spawn step, seed pair, split) and never imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmc import paths

from analysis.intervals import LMC_LINE_PCT, bootstrap_interval


def emergence_table(barriers: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """One row per spawn step: mean and 95% interval of the error and loss barriers per split
    (``below_2pct``: the whole interval below 2% on every split); and k*, the first spawn step
    whose error-barrier interval lies below 2% on every split (Frankle et al.'s reading)."""
    rows = []
    for k, at_k in barriers.groupby("spawn_step", sort=True):
        row = {"spawn_step": int(k), "epochs": float(at_k.epochs_at_spawn.iloc[0]), "pairs": at_k.pair.nunique()}
        for split, group in at_k.groupby("split", sort=True):
            for column, name in (("error_barrier_pct", "error"), ("loss_barrier", "loss")):
                low, high = bootstrap_interval(group[column])
                row[f"{split}_{name}_barrier"] = float(group[column].mean())
                row[f"{split}_{name}_ci_low"], row[f"{split}_{name}_ci_high"] = low, high
        rows.append(row)
    table = pd.DataFrame(rows)
    splits = sorted(barriers.split.unique())
    below = np.logical_and.reduce([table[f"{s}_error_ci_high"] < LMC_LINE_PCT for s in splits])
    table["below_2pct"] = below
    k_star = int(table.spawn_step[below].iloc[0]) if below.any() else None
    return table, k_star


def stays_below(table: pd.DataFrame, k_star: int | None) -> tuple[bool, list[int]]:
    """Whether every spawn step after k* is below 2% too, and the later steps that are not
    (ADAM's children can drift apart again: a dip is not emergence)."""
    if k_star is None:
        return False, []
    later = table[table.spawn_step > k_star]
    back_up = [int(k) for k in later.spawn_step[~later.below_2pct]]
    return not back_up, back_up


def printable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: each barrier as "mean [low, high]"."""
    out = pd.DataFrame({"spawn step": table.spawn_step, "epochs": table.epochs.round(2)})
    for split in sorted({c.split("_")[0] for c in table.columns if c.endswith("_error_barrier")}):
        for name, unit, digits in (("error", " %", 2), ("loss", "", 3)):
            mean, low, high = (table[f"{split}_{name}_{s}"] for s in ("barrier", "ci_low", "ci_high"))
            out[f"{split} {name} barrier{unit} [95% CI]"] = [
                f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" for m, lo, hi in zip(mean, low, high)]
    return out


def figure(table: pd.DataFrame, out: Path) -> Path:
    """Error barrier (%) vs spawn step on a symmetric-log axis, one line per split, the interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lmc.io import atomic_path

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    splits = sorted({c.split("_")[0] for c in table.columns if c.endswith("_error_barrier")})
    for split, color in zip(splits, sns.color_palette(n_colors=len(splits))):
        ax.plot(table.spawn_step, table[f"{split}_error_barrier"], marker="o", color=color, label=f"{split} split")
        ax.fill_between(table.spawn_step, table[f"{split}_error_ci_low"], table[f"{split}_error_ci_high"],
                        color=color, alpha=0.2)
    ax.axhline(LMC_LINE_PCT, color="grey", linestyle="--", linewidth=1, label="2% (LMC)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, max(1.0, float(table.spawn_step.max())) * 1.3)
    ax.set_xlabel("spawn step k (log scale)")
    ax.set_ylabel("error barrier (%), 95% interval")
    ax.legend(frameon=False)
    fig.tight_layout()
    saved = []
    for suffix, path in paths.figure_files(out).items():
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:])
        saved.append(path)
    plt.close(fig)
    return saved[0]


def write(table: pd.DataFrame, barriers: pd.DataFrame, out: Path) -> dict[str, Path]:
    """The table (CSV, Markdown), every pair's barrier rows, and the figure."""
    from lmc.io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    files = paths.table_files(out / paths.EMERGENCE_TABLE)
    with atomic_path(files[".csv"]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(files[".md"]) as tmp:
        tmp.write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    with atomic_path(out / paths.EMERGENCE_PAIRS) as tmp:
        barriers.to_csv(tmp, index=False)
    return {"table": files[".csv"], "figure": figure(table, out / paths.EMERGENCE_FIGURE)}
