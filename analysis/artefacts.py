"""Every pair of a sweep as one DataFrame, and the paper's tables built from it (pandas only).

A sweep's plan lists its tasks (cell labels, shared config, run and interpolation names); this
module reads what they left on disk (barriers.json, metrics.jsonl, manifests) into one tidy
frame, one row per pair and split, and aggregates it across seed pairs as mean ± std. Each
table builder returns the tidy numbers with a ``paper`` column, a wide frame in the paper's
layout (cells "ours ± std [paper]") and notes on cells that fall on the other side of the 2%
line from the paper. With ``intervals=True`` (two or more pairs) every barrier cell also gets a
95% bootstrap interval over its pairs (``analysis.intervals``): "connected" is then decided on
the interval (a cell that straddles 2% is "undecided"), and each cell says whether the paper's
value lies inside it. A grid with ``pairing = "different_init"`` also carries the barrier after
permutation alignment: its rows have ``alignment`` "before" / "after". Never imports torch.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis import intervals as ci
from analysis import paper
from analysis.tables import Table
from lmc import paths
from lmc.io import read_jsonl

LMC_LINE_PCT = 2.0  # Frankle et al.'s threshold, in percent
# Below this the paper's barriers (0.00-0.23%) are noise-level: a factor of 2 says nothing there.
FACTOR_FLOOR_PCT = 0.5
CONFIG_COLUMNS = ("dataset", "model", "depth", "width", "slope", "channels", "optimizer", "lr", "batch_size",
                  "warmup_epochs", "epochs", "augment", "init_seed")
BARRIER_COLUMNS = ("error_barrier_pct", "normalized_barrier", "loss_barrier", "acc_a", "acc_b", "loss_a", "loss_b",
                   "alpha_at_max_error")


def _num_classes(dataset: str, root) -> int | None:
    manifest = paths.manifest_path(paths.beton_path(dataset, "train", root))
    return json.loads(manifest.read_text())["num_classes"] if manifest.exists() else None


def collect(tasks: list[dict], root=None) -> pd.DataFrame:
    """One row per task and split (status 'missing' where the pair has no barriers yet)."""
    rows, classes = [], {}
    for task in tasks:
        cfg = task["config"]
        base = {"grid": task["grid"], "scale": task["scale"], "cell": task["cell"], "pair": task["pair"],
                **task["labels"], **{k: cfg.get(k) for k in CONFIG_COLUMNS},
                "seeds_a": tuple(task["seeds_a"]), "seeds_b": tuple(task["seeds_b"]),
                "run_a": task["run_a"], "run_b": task["run_b"], "interpolation": task["interpolation"],
                **({"init_seed_b": task["init_seed_b"]} if "init_seed_b" in task else {})}
        if cfg["dataset"] not in classes:
            classes[cfg["dataset"]] = _num_classes(cfg["dataset"], root)
        finals = [read_jsonl(paths.run_dir(task[r], root) / paths.METRICS) for r in ("run_a", "run_b")]
        base["train_seconds"] = sum(sum(m.get("seconds", 0.0) for m in rows_) for rows_ in finals)
        files = {label: paths.interpolation_dir(task[key], root) / paths.BARRIERS for label, key in _interpolations(task)}
        if not all(f.exists() for f in files.values()):
            rows.append({**base, "status": "missing"})
            continue
        for label, barriers in files.items():
            aligned = {"alignment": label} if label else {}
            for rec in json.loads(barriers.read_text())["barriers"]:
                rows.append({**base, **aligned, "split": rec["split"], **{k: rec.get(k) for k in BARRIER_COLUMNS},
                             "status": "ok", "data_manifest": rec.get("data_manifest"),
                             "git_revision": rec.get("git_revision"), "num_classes": classes[cfg["dataset"]]})
    df = pd.DataFrame(rows)
    if "split" in df:
        df = _mark_unstable(df)
    return df


def _interpolations(task: dict) -> list[tuple[str, str]]:
    """(alignment label, task key) of a task's interpolations: one, or before and after alignment."""
    if task.get("aligned_interpolation"):
        return [("before", "interpolation"), ("after", "aligned_interpolation")]
    return [("", "interpolation")]


def _mark_unstable(df: pd.DataFrame) -> pd.DataFrame:
    """A pair is 'unstable' (the paper's *) when an endpoint's loss is not finite or its test
    accuracy is at most twice chance: its barrier then measures nothing."""
    def pair_unstable(group: pd.DataFrame) -> bool:
        losses = pd.concat([group.loss_a, group.loss_b]).astype(float)
        test = group[group.split == "test"]
        chance = 1.0 / float(group.num_classes.iloc[0] or 10)
        low = bool(len(test)) and min(test.acc_a.iloc[0], test.acc_b.iloc[0]) <= 2 * chance
        return bool(not losses.map(math.isfinite).all() or low)

    ok = df[df.status == "ok"]
    flags = {key: pair_unstable(g) for key, g in ok.groupby(["cell", "pair"], sort=False)}
    return df.assign(unstable=[flags.get((c, p), False) for c, p in zip(df.cell, df.pair)])


def aggregate(df: pd.DataFrame, by: list[str], value: str, intervals: bool = False) -> pd.DataFrame:
    """mean, std (across pairs; NaN for one pair), n, how many pairs were unstable, and the means of
    the loss barrier and the endpoints' accuracy (for judging a cell: the paper's nets reach > 90%);
    with ``intervals``, the 95% bootstrap interval of the mean over pairs (ci_low, ci_high)."""
    ok = df[df.status == "ok"].assign(endpoint_acc=lambda d: 0.5 * (d.acc_a + d.acc_b))
    grouped = ok.groupby(by, sort=False)
    out = grouped.agg(mean=(value, "mean"), std=(value, "std"), n=(value, "size"),
                      unstable=("unstable", "sum"), loss_barrier=("loss_barrier", "mean"),
                      endpoint_acc=("endpoint_acc", "mean"))
    if intervals:
        bounds = [ci.bootstrap_interval(values) for values in grouped[value].agg(list)]
        out["ci_low"], out["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return out.reset_index()


def judge(tidy: pd.DataFrame, intervals: bool) -> pd.DataFrame:
    """``ours_connected`` from the mean, or with intervals from the interval (None when undecided),
    with ``ours_verdict`` and ``paper_in_ci`` beside it."""
    if not intervals:
        return tidy.assign(ours_connected=tidy["mean"] < LMC_LINE_PCT)
    verdicts = [ci.verdict(r.ci_low, r.ci_high) for r in tidy.itertuples()]
    # One pair has no interval: that cell is decided on its single value, as without intervals.
    verdicts = [v or (ci.CONNECTED if m < LMC_LINE_PCT else ci.NOT_CONNECTED) for v, m in zip(verdicts, tidy["mean"])]
    paper_values = tidy["paper"] if "paper" in tidy else [None] * len(tidy)
    return tidy.assign(ours_verdict=verdicts,
                       ours_connected=[None if v == ci.UNDECIDED else v == ci.CONNECTED for v in verdicts],
                       paper_in_ci=[ci.contains(r.ci_low, r.ci_high, p) for r, p in zip(tidy.itertuples(), paper_values)])


def cell_text(r, intervals: bool, with_paper: bool = True) -> str:
    """"ours ± std [paper]"; with an interval "ours ± std (CI lo–hi[, undecided][, paper inside|outside]) [paper]"."""
    text = fmt(r.mean, r.std, r.n, r.unstable)
    if intervals and not math.isnan(r.ci_low):
        about = [f"CI {r.ci_low:.2f}–{r.ci_high:.2f}"] + (["undecided"] if r.ours_verdict == ci.UNDECIDED else [])
        inside = getattr(r, "paper_in_ci", None) if with_paper else None
        if inside is not None:
            about.append("paper inside" if inside else "paper outside")
        text += f" ({', '.join(about)})"
    return f"{text} [{fmt_paper(r.paper)}]" if with_paper else text


def fmt(mean: float, std: float, n: int, unstable: int = 0, digits: int = 2) -> str:
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 and not math.isnan(std) else "")
    return text + (f" ({unstable}/{n} unstable)" if unstable else "")


def fmt_paper(value) -> str:
    """The paper's number; None (NaN once in a float column) is the paper's "unstable" (*)."""
    return "unstable" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _side_notes(tidy: pd.DataFrame, what) -> list[str]:
    """Cells where ours and the paper's barrier fall on different sides of the 2% line; with
    intervals, ours is judged on its interval and an undecided cell is named as such."""
    notes = []
    for r in tidy.itertuples():
        if r.n == 0:
            continue
        verdict = getattr(r, "ours_verdict", None)
        if verdict == ci.UNDECIDED:
            notes.append(f"{what(r)}: undecided, our 95% interval {r.ci_low:.2f}–{r.ci_high:.2f}% straddles the 2% line")
            continue
        if r.paper is None or (isinstance(r.paper, float) and math.isnan(r.paper)):
            if r.unstable < r.n:
                notes.append(f"{what(r)}: the paper reports unstable training; ours trained ({r.mean:.2f}%)")
            continue
        if r.ours_connected != (r.paper < LMC_LINE_PCT):
            ours = "connected" if r.ours_connected else "NOT connected"
            basis = f" (whole interval {r.ci_low:.2f}–{r.ci_high:.2f}%)" if verdict and not math.isnan(r.ci_low) else ""
            notes.append(f"{what(r)}: ours {r.mean:.2f}%{basis} is {ours}, the paper's {r.paper:.2f}% is on the "
                         f"other side of the 2% line")
        elif r.paper >= FACTOR_FLOOR_PCT and not 0.5 <= r.mean / r.paper <= 2.0:
            notes.append(f"{what(r)}: ours {r.mean:.2f}% is on the paper's side of 2% but outside a factor of 2 "
                         f"of its {r.paper:.2f}%")
    return notes


def _in_order(present, preferred=()) -> list:
    """The labels present, in the paper's order where it has them, then in order of appearance."""
    present = list(dict.fromkeys(present))
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


def _barrier_table(name: str, df: pd.DataFrame, axes: list[str], lookup, index: str, columns: list[str],
                   order: dict | None = None, intervals: bool = False) -> Table:
    tidy = aggregate(df, axes + ["split"], "error_barrier_pct", intervals)
    tidy["paper"] = [lookup(r) for r in tidy.itertuples()]
    tidy = judge(tidy, intervals)
    tidy["paper_connected"] = [None if p is None else p < LMC_LINE_PCT for p in tidy.paper]
    tidy["cell"] = [cell_text(r, intervals) for r in tidy.itertuples()]
    tidy["split"] = tidy["split"].str.capitalize()
    order = order or {}
    wide = tidy.pivot(index=index, columns=columns, values="cell")
    wide = wide.reindex(index=_in_order(tidy[index], order.get(index, ())))
    col_labels = _in_order(tidy[columns[0]], order.get(columns[0], ()))
    if len(columns) > 1:
        pairs = [(c, s) for c in col_labels for s in ("Test", "Train")]
        wide = wide.reindex(columns=pd.MultiIndex.from_tuples(pairs)).fillna("–")
        wide.columns = [f"{c} {s}" for c, s in wide.columns]
    else:
        wide = wide.reindex(columns=col_labels)
    notes = _side_notes(tidy, lambda r: " / ".join(str(getattr(r, a)) for a in axes) + f" ({r.split.lower()})")
    if intervals:
        judged = tidy.paper_in_ci.dropna()
        notes.append(f"the paper's value lies inside our 95% bootstrap interval in {int(judged.sum())} of "
                     f"{len(judged)} cells")
    test_acc = tidy[(tidy.split == "Test") & (tidy.unstable == 0)].endpoint_acc
    if len(test_acc):
        notes.append(f"endpoints' test accuracy (stable pairs): {100 * test_acc.min():.1f}–{100 * test_acc.max():.1f}%")
    unstable = tidy[tidy.unstable > 0]
    notes += [f"{' / '.join(str(r[a]) for a in axes)}: {r['unstable']}/{r['n']} pair(s) unstable "
              f"(non-finite loss or accuracy near chance)" for _, r in unstable[unstable.split == "Test"].iterrows()]
    return Table(name, tidy.drop(columns="cell"), wide.reset_index().rename(columns={index: ""}), notes)


def table1(df: pd.DataFrame, intervals: bool = False) -> Table:
    return _barrier_table("table1", df, ["rows", "columns"],
                          lambda r: paper.table1_cell(r.rows, r.columns, r.split), "rows", ["columns", "split"],
                          {"rows": list(paper.TABLE1_ROWS), "columns": list(paper.TABLE1_COLUMNS)}, intervals)


def table2(df: pd.DataFrame, intervals: bool = False) -> Table:
    t = _barrier_table("table2", df, ["columns"], lambda r: paper.table2_cell(r.columns, r.split), "split", ["columns"],
                       {"columns": list(paper.TABLE2), "split": ["Train", "Test"]}, intervals)
    t.wide[""] = [f"%B {s.lower()}" for s in t.wide[""]]
    return t


def ablation(df: pd.DataFrame, axes: list[str], intervals: bool = False) -> Table:
    """The fidelity ablation: one row per setting (every axis but the last, the Table 2 column),
    Table 2's cells as columns, and the settings ranked by how close they land to the paper:
    first by the number of cells on the paper's side of the 2% line, then by the mean distance
    |log10((ours + 0.1) / (paper + 0.1))| (0.1 points keep near-zero barriers comparable)."""
    settings, column = axes[:-1], axes[-1]
    data = df.assign(setting=[" | ".join(str(getattr(r, a)) for a in settings) for r in df.itertuples()])
    table = _barrier_table("ablation", data, ["setting", column],
                           lambda r: paper.table2_cell(getattr(r, column), r.split), "setting", [column, "split"],
                           {column: list(paper.TABLE2)}, intervals)
    tidy = table.tidy.assign(distance=lambda d: (((d["mean"] + 0.1) / (d.paper + 0.1)).map(math.log10)).abs(),
                             same_side=lambda d: d.ours_connected == d.paper_connected)
    ranking = (tidy.groupby("setting", sort=False)
               .agg(cells=("same_side", "size"), same_side=("same_side", "sum"), distance=("distance", "mean"))
               .sort_values(["same_side", "distance"], ascending=[False, True]))
    table.notes[:0] = [f"rank {i}: {setting}: {int(r.same_side)}/{int(r.cells)} cells on the paper's side of 2%, "
                       f"mean log-distance {r.distance:.2f}" for i, (setting, r) in enumerate(ranking.iterrows(), 1)]
    return table


def table4(df: pd.DataFrame) -> Table:
    """Test accuracy (%) of the endpoints (mean of both children, then across pairs) beside Table 4."""
    test = df[(df.status == "ok") & (df.split == "test")].copy()
    test["test_acc_pct"] = 50.0 * (test.acc_a + test.acc_b)
    tidy = aggregate(test, ["datasets", "depths", "rates"], "test_acc_pct")
    tidy["paper"] = [paper.table4_cell(r.datasets, r.depths, r.rates) for r in tidy.itertuples()]
    tidy["cell"] = [f"{fmt(r.mean, r.std, r.n, r.unstable)} [{fmt_paper(r.paper)}]" for r in tidy.itertuples()]
    tidy["column"] = tidy.depths + " " + tidy.rates
    wide = tidy.pivot(index="datasets", columns="column", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(tidy.datasets)), columns=list(dict.fromkeys(tidy.column)))
    return Table("table4", tidy.drop(columns=["cell", "column"]), wide.reset_index().rename(columns={"datasets": ""}))


def table3(rows: list[dict]) -> Table:
    """Parameter counts (from experiments.models.parameter_table) beside the paper's Table 3."""
    labels = {"cnn": "CNN", "lc_cnn": "LC-CNN", "toeplitz_mlp": "MLP", "attention": "Attention (ViT-like)"}
    tidy = pd.DataFrame([{"model": r["name"], "label": labels.get(r["name"], r["name"]), "params": r["params"],
                          "ours_millions": r["params_millions"], "paper": r["paper_millions"]}
                         for r in rows if r["name"] in labels])
    wide = tidy[["label", "ours_millions", "paper"]].rename(columns={"label": "", "ours_millions": "ours (M)",
                                                                    "paper": "paper (M)"})
    notes = [f"{r.label}: {r.ours_millions:.2f} M vs the paper's {r.paper:.2f} M" for r in tidy.itertuples()
             if r.paper is not None and round(r.ours_millions, 2) != r.paper]
    return Table("table3", tidy, wide, notes)


def figure_table(name: str, df: pd.DataFrame, axes: list[str], value: str, intervals: bool = False) -> Table:
    """The numbers behind a figure (no published numbers to compare): mean ± std per cell and split."""
    data = df[df.status == "ok"].copy()
    if value == "normalized_barrier_pct":
        data[value] = 100.0 * data["normalized_barrier"]
    tidy = aggregate(data, axes + ["split"], value, intervals)
    tidy["paper"] = None  # figure only: the paper prints no numbers
    tidy = judge(tidy, intervals)
    tidy["cell"] = [cell_text(r, intervals, with_paper=False) for r in tidy.itertuples()]
    tidy["column"] = [" / ".join([*(str(getattr(r, a)) for a in axes[1:]), r.split]) for r in tidy.itertuples()]
    wide = tidy.pivot(index=axes[0], columns="column", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(tidy[axes[0]])), columns=list(dict.fromkeys(tidy.column)))
    notes = [f"{' / '.join(str(getattr(r, a)) for a in axes)} ({r.split}): undecided, our 95% interval "
             f"{r.ci_low:.2f}–{r.ci_high:.2f}% straddles the 2% line"
             for r in tidy.itertuples() if getattr(r, "ours_verdict", None) == ci.UNDECIDED]
    return Table(name, tidy.drop(columns=["cell", "column"]), wide.reset_index().rename(columns={axes[0]: ""}),
                 notes)


def collect_curves(tasks: list[dict], root=None) -> pd.DataFrame:
    """The per-α curves of every finished pair, with the cell's labels."""
    frames = []
    for task in tasks:
        for label, key in _interpolations(task):
            f = paths.interpolation_dir(task[key], root) / paths.CURVE_PARQUET
            if f.exists():
                frames.append(pd.read_parquet(f, columns=["split", "alpha", "error", "loss", "accuracy"])
                              .assign(cell=task["cell"], pair=task["pair"], **task["labels"],
                                      **({"alignment": label} if label else {})))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def save_frame(df: pd.DataFrame, path: Path) -> Path:
    """parquet, atomically (tuples become lists: parquet has no tuple type)."""
    from lmc.io import atomic_path

    out = df.copy()
    for col in ("seeds_a", "seeds_b"):
        if col in out:
            out[col] = out[col].map(lambda v: list(v) if isinstance(v, tuple) else v)
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, index=False)
    return path
