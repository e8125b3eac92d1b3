"""Barrier tables from interpolation results, and the one writer of every table (pandas only:
this stage never imports torch)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.paper import paper_reference
from lmc import paths


@dataclass
class Table:
    """One table: tidy numbers (CSV), a readable layout (Markdown, LaTeX) and what a reader must know."""
    name: str
    tidy: pd.DataFrame
    wide: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    floatfmt: str = "g"  # how the readable layout prints floats (its cells are mostly formatted text)


def collect_barriers(root=None) -> pd.DataFrame:
    """Every interpolation's barrier records under ``<results>/interpolations`` as one DataFrame."""
    rows = []
    for f in sorted(paths.interpolations_dir(root).glob(f"*/{paths.BARRIERS}")):
        for rec in json.loads(f.read_text())["barriers"]:
            rows.append({**rec, "interpolation": f.parent.name})
    return pd.DataFrame(rows)


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


def write_table(table: Table | pd.DataFrame, stem: Path) -> dict[str, Path]:
    """``<stem>.csv`` (the tidy numbers), ``.md`` and ``.tex`` (the readable layout, then the notes),
    each written atomically. A plain DataFrame (raw barrier rows: the demo, ``lmc barriers``) is
    both its tidy and its readable form, its floats printed with 3 decimals."""
    from lmc.io import atomic_path

    if isinstance(table, pd.DataFrame):
        table = Table(Path(stem).name, table, table, floatfmt=".3f")
    md = table.wide.to_markdown(index=False, floatfmt=table.floatfmt) + "\n"
    if table.notes:
        md += "\n" + "\n".join(f"- {n}" for n in table.notes) + "\n"
    latex_floats = None if table.floatfmt == "g" else f"%{table.floatfmt}"
    writers = {".csv": lambda p: table.tidy.to_csv(p, index=False),
               ".md": lambda p: Path(p).write_text(md),
               ".tex": lambda p: Path(p).write_text(table.wide.to_latex(index=False, float_format=latex_floats))}
    out = {}
    for suffix, write in writers.items():
        path = Path(str(stem) + suffix)
        with atomic_path(path) as tmp:
            write(tmp)
        out[suffix] = path
    return out
