"""Barrier tables from interpolation results (pandas only: this stage never imports torch)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.paper import paper_reference
from lmc import paths


def collect_barriers(root=None) -> pd.DataFrame:
    """Every interpolation's barrier records under ``<results>/interpolations`` as one DataFrame."""
    rows = []
    for f in sorted(paths.interpolations_dir(root).glob(f"*/{paths.BARRIERS}")):
        for rec in json.loads(f.read_text())["barriers"]:
            rows.append({**rec, "interpolation": f.parent.name})
    return pd.DataFrame(rows)


def collect_curves(root=None) -> pd.DataFrame:
    files = sorted(paths.interpolations_dir(root).glob(f"*/{paths.CURVE_PARQUET}"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f).assign(interpolation=f.parent.name) for f in files], ignore_index=True)


def with_paper(barriers: pd.DataFrame) -> pd.DataFrame:
    """Add the paper's value for the nearest published cell (``paper_ref``, ``paper_barrier_pct``)."""
    refs = [paper_reference(r.model, int(r.depth), r.optimizer, float(r.lr), r.split,
                            warmup=bool(getattr(r, "warmup", False)))
            for r in barriers.itertuples()]
    return barriers.assign(paper_ref=[r[0] for r in refs], paper_barrier_pct=[r[1] for r in refs])


DEMO_COLUMNS = ["pair", "model", "optimizer", "lr", "split", "error_barrier_pct", "loss_barrier",
                "acc_a", "acc_b", "paper_barrier_pct", "paper_ref"]


def demo_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """One row per pair and split, in the order the pairs were given."""
    table = with_paper(barriers)
    return table[[c for c in DEMO_COLUMNS if c in table.columns]].reset_index(drop=True)


def write_table(table: pd.DataFrame, stem: Path) -> dict[str, Path]:
    """CSV, Markdown and LaTeX beside each other (atomic writes)."""
    from lmc.io import atomic_path

    out = {}
    for suffix, write in ((".csv", lambda p: table.to_csv(p, index=False)),
                          (".md", lambda p: Path(p).write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")),
                          (".tex", lambda p: Path(p).write_text(table.to_latex(index=False, float_format="%.3f")))):
        path = Path(str(stem) + suffix)
        with atomic_path(path) as tmp:
            write(tmp)
        out[suffix] = path
    return out
