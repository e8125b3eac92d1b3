"""Tables and figures of the ViT studies (seed 001), from the rows the studies collect (pandas and
seaborn only: never torch).

``vit_lmc``: one row per initialisation (random, pretrained): the train and test error barriers
(%), the loss barriers, the test loss at its worst α over the endpoints' mean (seed 001's
criterion: "more than double" for the random init), the endpoints' accuracies, and where LMC
emerges for the random init (k*). ``vit_prune``: one row per remaining ratio: accuracies of
PLATON, of one-shot magnitude pruning, of the two masks retrained from the pretrained weights,
and the barrier of two masked children. Cells read "mean ± std" over seed pairs, with a 95%
bootstrap interval when there are two or more; seed 001's numbers sit in the ``paper`` column.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import intervals as ci
from analysis.artefacts import fmt
from analysis.tables import Table

INITS = ("random", "pretrained")
# Seed 001 gives no barrier numbers, only what its curves show.
PAPER_LMC = {"random": "not connected: test loss peaks near α = 0.5 at more than twice the endpoints' mean",
             "pretrained": "connected: test loss does not rise along α"}
# Seed 001's test accuracies (%): the dense fine-tuned ViT-B/16, PLATON at 20% / 5%, the 20% mask retrained.
PAPER_PRUNE = {1.0: {"platon_acc": 98.0}, 0.2: {"platon_acc": 95.3, "lottery_acc": 93.6}, 0.05: {"platon_acc": 93.7}}


def _stats(values, intervals: bool) -> dict:
    values = pd.Series(values, dtype=float).dropna()
    low, high = ci.bootstrap_interval(values) if intervals else (math.nan, math.nan)
    return {"mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std()) if len(values) > 1 else math.nan, "n": int(len(values)),
            "ci_low": low, "ci_high": high}


def _cell(s: dict, digits: int = 2) -> str:
    text = fmt(s["mean"], s["std"], s["n"], digits=digits)
    if not math.isnan(s["ci_low"]):
        text += f" [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"
    return text


def _connected(barrier: dict) -> str:
    """On the interval when there is one, else on the mean; '–' without data."""
    if barrier["n"] == 0:
        return "–"
    verdict = ci.verdict(barrier["ci_low"], barrier["ci_high"])
    return verdict or (ci.CONNECTED if barrier["mean"] < ci.LMC_LINE_PCT else ci.NOT_CONNECTED)


def lmc_table(df: pd.DataFrame, intervals: bool, k_star: str = "") -> Table:
    """Rows random / pretrained from the pairs' barrier rows (``analysis.artefacts.collect``)."""
    ok = df[df.status == "ok"].copy()
    ok["endpoint_acc_pct"] = 50.0 * (ok.acc_a + ok.acc_b)
    mean_loss = 0.5 * (ok.loss_a + ok.loss_b)
    ok["max_loss_ratio"] = (ok.loss_barrier + mean_loss) / mean_loss
    tidy, wide = [], []
    for init in [i for i in INITS if i in set(ok["init"])]:
        row, cells = {"init": init}, {"": init}
        for split in ("train", "test"):
            at = ok[(ok["init"] == init) & (ok.split == split)]
            error, loss = _stats(at.error_barrier_pct, intervals), _stats(at.loss_barrier, intervals)
            acc = _stats(at.endpoint_acc_pct, intervals)
            row.update({f"{split}_error_barrier_{k}": v for k, v in error.items()})
            row.update({f"{split}_loss_barrier_{k}": v for k, v in loss.items()})
            row.update({f"{split}_acc_{k}": v for k, v in acc.items()})
            row[f"{split}_connected"] = _connected(error)
            cells[f"{split} error barrier (%)"] = _cell(error)
            cells[f"{split} loss barrier"] = _cell(loss, 3)
            if split == "test":
                ratio = _stats(at.max_loss_ratio, intervals)
                row.update({f"test_max_loss_ratio_{k}": v for k, v in ratio.items()})
                cells["test max loss / endpoints' mean"] = _cell(ratio)
            cells[f"{split} acc of endpoints (%)"] = _cell(acc, 1)
        verdicts = {row["train_connected"], row["test_connected"]}
        row["connected"] = verdicts.pop() if len(verdicts) == 1 else "split-dependent"
        cells["LMC (< 2% on both splits)"] = row["connected"]
        cells["k* (random init)"] = k_star if init == "random" else "–"
        row["paper"] = cells["paper (seed 001)"] = PAPER_LMC[init]
        tidy.append(row)
        wide.append(cells)
    notes = ["barriers are 100·B (error) and the loss's excess over the endpoints' mean, over 11 α; cells are "
             "mean ± std over seed pairs" + (", [95% bootstrap interval]" if intervals else "")]
    if k_star:
        notes.append(f"k*: the first spawn step from which the random-init children are connected ({k_star}); "
                     f"the emergence table beside this one has every spawn step")
    return Table("vit_lmc", pd.DataFrame(tidy), pd.DataFrame(wide), notes)


PRUNE_COLUMNS = {
    "platon_acc": "PLATON acc (%)",
    "magnitude_oneshot_acc": "magnitude one-shot acc (%)",
    "lottery_acc": "PLATON mask retrained acc (%)",
    "magnitude_lottery_acc": "magnitude mask retrained acc (%)",
    "lottery_test_barrier": "masked-pair test barrier, PLATON mask (%)",
    "lottery_train_barrier": "masked-pair train barrier, PLATON mask (%)",
    "magnitude_test_barrier": "masked-pair test barrier, magnitude mask (%)",
}


def _paper_prune(ratio: float) -> str:
    p = PAPER_PRUNE.get(ratio, {})
    parts = [f"{'dense' if ratio == 1.0 else 'PLATON'} {p['platon_acc']:.1f}"] if "platon_acc" in p else []
    if "lottery_acc" in p:
        parts.append(f"mask retrained {p['lottery_acc']:.1f}")
    return ", ".join(parts) or "–"


def prune_table(rows: pd.DataFrame, intervals: bool) -> Table:
    """Rows: remaining ratio (1.0 first); ``rows`` has one row per ratio and seed pair with the
    columns of ``PRUNE_COLUMNS`` (accuracies in %, barriers in %)."""
    tidy, wide = [], []
    for ratio in sorted(rows.ratio.unique(), reverse=True):
        at = rows[rows.ratio == ratio]
        row, cells = {"ratio": float(ratio)}, {"remaining": f"{100 * ratio:g}%"}
        for key, label in PRUNE_COLUMNS.items():
            s = _stats(at[key], intervals) if key in at else _stats([], False)
            row.update({f"{key}_{k}": v for k, v in s.items()})
            cells[label] = _cell(s, 1 if key.endswith("acc") else 2)
        for key, value in PAPER_PRUNE.get(float(ratio), {}).items():
            row[f"paper_{key}"] = value
        cells["paper (seed 001)"] = _paper_prune(float(ratio))
        tidy.append(row)
        wide.append(cells)
    notes = ["test accuracy (%) on the clean test split; PLATON: one run pruned during fine-tuning from the "
             "pretrained weights; magnitude one-shot: the dense fine-tuned run's largest |θ| kept, evaluated "
             "without retraining; mask retrained: the mask applied to the pretrained weights and trained with "
             "it fixed (the lottery ticket), the mean of its two masked children; masked-pair barrier: those two "
             "children (same mask, same start, different order and augmentation seeds)",
             "at 100% every column is the dense fine-tuning (no mask) and its barrier the dense pair's"]
    return Table("vit_prune", pd.DataFrame(tidy), pd.DataFrame(wide), notes)


def curves_figure(curves: pd.DataFrame, stem: Path, hue: str = "init") -> list[Path]:
    """Error (%) and loss along α, one colour per ``hue`` value, train dashed and test solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lmc import paths
    from lmc.io import atomic_path

    data = curves.assign(error_pct=100 * curves["error"])
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (y, label) in zip(axes, (("error_pct", "error (%)"), ("loss", "loss"))):
        sns.lineplot(data=data, x="alpha", y=y, hue=hue, style="split", style_order=["test", "train"],
                     errorbar=None, marker="o", markersize=4, ax=ax, legend=ax is axes[-1])
        ax.set_xlabel("α  (0 = run A, 1 = run B)")
        ax.set_ylabel(label)
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    saved = []
    for suffix, path in paths.figure_files(stem).items():
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:], bbox_inches="tight")
        saved.append(path)
    plt.close(fig)
    return saved
