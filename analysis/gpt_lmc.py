"""The gpt_lmc artefact's table and figure (seed 002): GPT pairs from scratch, spawned after k
steps and fine-tuned; their loss and token-error barriers and the test loss along the path.

Reads what the pairs left on disk (``barriers.json``, ``metrics.jsonl``, the curves) and never
imports torch. A row's cells are the mean over its seed pairs, with the standard deviation and
the 95% percentile-bootstrap interval (``analysis.intervals``) when there are two or more.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis import intervals as ci
from analysis.tables import Table
from lmc import paths
from lmc.io import read_jsonl

BARRIER_COLUMNS = ("loss_barrier", "error_barrier_pct", "loss_a", "loss_b", "acc_a", "acc_b", "alpha_at_max_error")
# (tidy column, heading, decimals): the table's columns, each on the test and the train split.
MEASURES = (("loss_barrier", "loss barrier", 3), ("error_barrier_pct", "token-error barrier %", 2),
            ("endpoint_loss", "endpoint loss", 3))
SPLITS = ("test", "train")


def collect(tasks: list[dict], root=None) -> pd.DataFrame:
    """One row per pair and split (status 'missing' where a pair has no barriers yet)."""
    rows = []
    for task in tasks:
        base = {"row": task["labels"]["row"], "row_key": task["cell"], "spawn_step": task["labels"]["spawn_step"],
                "pair": task["pair"], "run_a": task["run_a"], "run_b": task["run_b"],
                "interpolation": task["interpolation"], "seeds_a": tuple(task["seeds_a"]),
                "seeds_b": tuple(task["seeds_b"]), "init_seed": task["config"]["init_seed"],
                "dataset": task["config"]["dataset"], "max_steps": task["config"]["max_steps"]}
        metrics = [read_jsonl(paths.run_dir(task[r], root) / paths.METRICS) for r in ("run_a", "run_b")]
        base["train_seconds"] = sum(m.get("seconds", 0.0) for rows_ in metrics for m in rows_)
        barriers = paths.interpolation_dir(task["interpolation"], root) / paths.BARRIERS
        if not barriers.exists():
            rows.append({**base, "status": "missing"})
            continue
        for rec in json.loads(barriers.read_text())["barriers"]:
            rows.append({**base, "status": "ok", "split": rec["split"], **{k: rec.get(k) for k in BARRIER_COLUMNS},
                         "git_revision": rec.get("git_revision"), "data_manifest": rec.get("data_manifest")})
    df = pd.DataFrame(rows)
    if "loss_a" in df:
        df["endpoint_loss"] = 0.5 * (df.loss_a + df.loss_b)
    return df


def _summary(values: pd.Series, intervals: bool) -> dict:
    values = values.astype(float)
    low, high = ci.bootstrap_interval(values) if intervals else (math.nan, math.nan)
    return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else math.nan,
            "n": int(len(values)), "ci_low": low, "ci_high": high}


def _cell(s: dict, digits: int) -> str:
    if s["n"] == 0 or math.isnan(s["mean"]):
        return "–"
    text = f"{s['mean']:.{digits}f}"
    if s["n"] > 1 and not math.isnan(s["std"]):
        text += f" ± {s['std']:.{digits}f}"
    if not math.isnan(s["ci_low"]):
        text += f" [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"
    return text


def _verdict(stats: dict) -> str:
    """LMC by Frankle et al.'s rule on the token error: both splits' barrier below 2%, decided on the
    95% interval when there is one (the interval straddling 2% on a split is 'undecided')."""
    verdicts = []
    for split in SPLITS:
        s = stats.get((split, "error_barrier_pct"))
        if s is None:
            continue
        v = ci.verdict(s["ci_low"], s["ci_high"])
        verdicts.append(v or (ci.CONNECTED if s["mean"] < ci.LMC_LINE_PCT else ci.NOT_CONNECTED))
    if not verdicts:
        return "–"
    if ci.NOT_CONNECTED in verdicts:
        return "no"
    return "undecided" if ci.UNDECIDED in verdicts else "yes"


def table(df: pd.DataFrame, order: list[str], intervals: bool = False, pretrain_note: str = "") -> Table:
    """One row per row label (in ``order``): each measure on both splits, the pairs, the verdict."""
    ok = df[df.status == "ok"] if "status" in df else df
    tidy, wide = [], []
    for label in order:
        at_row = ok[ok.row == label] if len(ok) else ok
        stats = {}
        for split in SPLITS:
            at_split = at_row[at_row.split == split] if len(at_row) else at_row
            for column, _, _ in MEASURES:
                s = _summary(at_split[column] if len(at_split) else pd.Series(dtype=float), intervals)
                stats[(split, column)] = s
                tidy.append({"row": label, "split": split, "measure": column, **s})
        line = {"": label}
        for column, heading, digits in MEASURES:
            for split in SPLITS:
                line[f"{heading}, {split}"] = _cell(stats[(split, column)], digits)
        line["pairs"] = int(at_row.pair.nunique()) if len(at_row) else 0
        line["LMC (token-error barrier < 2%)"] = _verdict(stats)
        for rec in tidy[-len(SPLITS) * len(MEASURES):]:
            rec["lmc"] = line["LMC (token-error barrier < 2%)"]
        wide.append(line)
    notes = ["loss barrier: the highest mean next-token cross-entropy (nats per token) along the straight path "
             "minus the endpoints' mean; token-error barrier: the same for 1 − next-token accuracy, in percent; "
             "11 α from 0 to 1",
             "test: every window of the held-out last 10% of the text; train: an evenly spaced subset of as many "
             "training windows",
             "endpoint loss: the mean of the two children's losses (α = 0 and 1)",
             "spawned at k: both children continue from one parent trained k steps under its own noise "
             "(order and augmentation seeds 0) and share the total step budget"]
    if pretrain_note:
        notes.append(f"fine-tuned: {pretrain_note}")
    if intervals:
        notes.append("cells: mean ± std over seed pairs [95% percentile-bootstrap interval of the mean]")
    missing = df[df.status != "ok"] if "status" in df else df.iloc[0:0]
    notes += [f"{r.row} pair {r.pair}: no barriers yet (failed or unfinished)" for r in missing.itertuples()]
    return Table(paths.GPT_LMC_TABLE, pd.DataFrame(tidy), pd.DataFrame(wide), notes)


def figure(curves: pd.DataFrame, out: Path, order: list[str]) -> list[Path]:
    """Test loss along α, one line per row (mean over pairs, ± std as a band): seed 002's bell from
    scratch against a flat line when fine-tuned. Right: the same minus the straight line between
    the endpoints, so rows at different loss levels share one baseline. PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lmc.io import atomic_path

    test = curves[curves.split == "test"].copy()
    ends = test.groupby(["row", "pair"]).apply(
        lambda g: pd.Series({"loss_0": g.loc[g.alpha.idxmin(), "loss"], "loss_1": g.loc[g.alpha.idxmax(), "loss"]}),
        include_groups=False).reset_index()
    test = test.merge(ends, on=["row", "pair"])
    test["above_line"] = test.loss - ((1 - test.alpha) * test.loss_0 + test.alpha * test.loss_1)
    order = [r for r in order if r in set(test.row)]
    band = "sd" if test.groupby("row").pair.nunique().max() > 1 else None

    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, y, label in ((axes[0], "loss", "test loss (nats per token)"),
                         (axes[1], "above_line", "test loss above the endpoints' line")):
        sns.lineplot(data=test, x="alpha", y=y, hue="row", hue_order=order, marker="o", errorbar=band, ax=ax)
        ax.set_xlabel("α  (0 = child A, 1 = child B)")
        ax.set_ylabel(label)
    axes[1].axhline(0.0, color="grey", linewidth=0.8)
    axes[0].get_legend().remove()
    axes[1].legend(frameon=False, fontsize="small")
    fig.tight_layout()
    saved = []
    for suffix, path in paths.figure_files(out).items():
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:])
        saved.append(path)
    plt.close(fig)
    return saved
