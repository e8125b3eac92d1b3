"""Figures with seaborn (never torch): error along the interpolation path, barrier summaries."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and clusters have no display
    import matplotlib.pyplot as plt

    return plt


def error_vs_alpha(curves: pd.DataFrame, out: Path, hue: str = "pair") -> list[Path]:
    """Test-error-vs-α curves, one panel per split, one line per pair; saved as PNG and PDF."""
    import seaborn as sns

    plt = _pyplot()
    data = curves.assign(error_pct=100 * curves["error"])
    grid = sns.relplot(data=data, x="alpha", y="error_pct", hue=hue, col="split", kind="line", marker="o",
                       height=3.2, aspect=1.2, facet_kws={"sharey": False})
    grid.set_axis_labels("α  (0 = run A, 1 = run B)", "error (%)")
    grid.set_titles("{col_name} split")
    saved = []
    for suffix in (".png", ".pdf"):
        path = Path(out).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.savefig(path, dpi=150)
        saved.append(path)
    plt.close(grid.figure)
    return saved


# -- the paper's figures, from a sweep's tidy frame (analysis.artefacts.collect) ------------------

LMC_LINE_PCT = 2.0


def _save(grid, out: Path) -> list[Path]:
    """PNG (for a quick look) and PDF (for a paper) of a seaborn grid, then free it."""
    from lmc.io import atomic_path

    plt = _pyplot()
    saved = []
    for suffix in (".png", ".pdf"):
        path = Path(out).with_suffix(suffix)
        # Atomic: several sweeps sharing a results directory may redraw the same figure at once.
        with atomic_path(path) as tmp:
            grid.savefig(tmp, dpi=150, format=suffix[1:])
        saved.append(path)
    plt.close(grid.figure)
    return saved


def _lmc_line(grid) -> None:
    """The 2% line of "linearly mode-connected" on every panel."""
    for ax in grid.axes.flat:
        ax.axhline(LMC_LINE_PCT, color="grey", linestyle="--", linewidth=0.8)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.status == "ok"].copy()


def barrier_vs_slope(df: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 1: error barrier (%) vs Leaky-ReLU slope p, one line per depth; mean ± sd over pairs."""
    import seaborn as sns

    grid = sns.relplot(data=_ok(df), x="slope", y="error_barrier_pct", hue="depths", col="split", kind="line",
                       marker="o", errorbar="sd", height=3.2, aspect=1.2, facet_kws={"sharey": False})
    grid.set_axis_labels("Leaky-ReLU slope p (0 = ReLU)", "error barrier (%)")
    grid.set_titles("{col_name} split")
    _lmc_line(grid)
    return _save(grid, out)


def barrier_per_layer(df: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 2: error barrier (%) per hidden-layer type, one bar per learning rate."""
    import seaborn as sns

    grid = sns.catplot(data=_ok(df), x="layers", y="error_barrier_pct", hue="rates", col="split", kind="bar",
                       errorbar="sd", height=3.2, aspect=1.3)
    grid.set_axis_labels("hidden layer", "error barrier (%)")
    grid.set_titles("{col_name} split")
    _lmc_line(grid)
    return _save(grid, out)


def normalized_per_dataset(df: pd.DataFrame, out: Path) -> list[Path]:
    """Figures 3 and 5: normalised barrier (Eq. 2, %) per dataset, one bar per depth, a panel per lr and split."""
    import seaborn as sns

    data = _ok(df).assign(normalized_barrier_pct=lambda d: 100.0 * d.normalized_barrier)
    grid = sns.catplot(data=data, x="datasets", y="normalized_barrier_pct", hue="depths", col="rates", row="split",
                       kind="bar", errorbar="sd", height=2.8, aspect=1.3, sharey=False)
    grid.set_axis_labels("dataset", "normalised barrier (%)")
    grid.set_titles("{row_name} split, lr {col_name}")
    _lmc_line(grid)
    return _save(grid, out)


def barrier_before_after_alignment(df: pd.DataFrame, out: Path, x: str) -> list[Path]:
    """Different-init pairs: error barrier (%) before and after permutation alignment, per cell of ``x``."""
    import seaborn as sns

    grid = sns.catplot(data=_ok(df), x=x, y="error_barrier_pct", hue="alignment", hue_order=["before", "after"],
                       col="split", kind="bar", errorbar="sd", height=3.2, aspect=1.2)
    grid.set_axis_labels(x, "error barrier (%)")
    grid.set_titles("{col_name} split")
    _lmc_line(grid)
    return _save(grid, out)


def interpolation_curves(curves: pd.DataFrame, out: Path, hue: str, col: str | None) -> list[Path]:
    """Error (%) along the path for every cell (mean over pairs), train dashed, test solid."""
    import seaborn as sns

    data = curves.assign(error_pct=100 * curves["error"])
    panels = data[col].nunique() if col else 1
    col = col if panels > 1 else None  # one panel: no facet (and no empty room for a wrapped grid)
    grid = sns.relplot(data=data, x="alpha", y="error_pct", hue=hue, style="split", col=col,
                       col_wrap=min(4, panels) if col else None,
                       kind="line", errorbar=None, height=2.8, aspect=1.1, facet_kws={"sharey": False},
                       style_order=["test", "train"])
    grid.set_axis_labels("α  (0 = run A, 1 = run B)", "error (%)")
    if col:
        grid.set_titles("{col_name}")
    return _save(grid, out)
