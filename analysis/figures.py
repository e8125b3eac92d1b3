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
