"""`lmc reproduce vit_prune`: PLATON, lottery masks and masked pairs of a fine-tuned ViT (seed 001)

    lmc reproduce vit_prune --scale quick               # pretraining shared with vit_lmc (cached)
    lmc reproduce vit_prune --scale quick --seeds 3 --jobs 2
    lmc reproduce vit_prune --scale paper --checkpoint /data/vit-base-patch16-224-in21k --device cuda

Rows: the remaining ratio of the attention and MLP matrices, 100% (dense), 20%, 5%. Per seed
pair i, all from the pretrained weights (``_vit.py``) with the fine-tuning settings of vit_lmc:

1. dense: the pretrained pair of vit_lmc (the same runs); its child A is "the dense model";
2. PLATON: one run pruned during fine-tuning to the ratio (child A's noise); its final mask;
3. magnitude: the dense child A's largest |θ| at the ratio (``experiments/pruning/oneshot.py``),
   evaluated as is (one-shot, no retraining), and saved as a mask folder;
4. lottery tickets: each mask (PLATON's, magnitude's) on the *pretrained* weights, retrained with
   the mask fixed, as a pair (same mask, same start, different noise), interpolated: the masked
   pair's barrier (Frankle et al.'s link between stability and lottery tickets).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from app.studies import _vit

TITLE = "ViT pruning (seed 001): PLATON vs magnitude masks, lottery tickets retrained from the pretrained weights"
SCALES = {"quick": _vit.QUICK.notes, "paper": _vit.PAPER_NOTES}


def check(args) -> None:
    """Everything that can be refused, refused before a file is written."""
    _vit.scale_for(args)


def _label(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def run(args, out: Path) -> int:
    import pandas as pd

    from analysis import artefacts, report
    from analysis import vit as tables
    from analysis.tables import write_table
    from experiments.pruning import oneshot
    from lmc import paths
    from lmc.config import replace
    from lmc.io import atomic_write_text, read_jsonl

    t0 = time.time()
    scale = _vit.scale_for(args)
    done_before = _vit.done_runs(args.results)
    print(f"[vit_prune] {TITLE} — scale {scale.name}: {args.seeds} seed pair(s)\n[vit_prune] {scale.notes}")
    data = _vit.prepare_data(scale, args.results)
    dense = _vit.finetune_configs(scale, args.results, args.device)["pretrained"]
    pruned = replace(dense, epochs=scale.prune_epochs)
    seeds = range(args.seeds)

    # Stage 1: the dense pairs, and PLATON at each ratio (child A's noise), from the pretrained weights.
    dense_tasks = [_vit.pair_task("vit_prune", scale.name, "dense", i, dense, args.device, {"mask": "none"})
                   for i in seeds]
    platon = {(r, i): _vit.child_a(replace(pruned, prune="platon", prune_ratio=r), i)
              for r in scale.prune_ratios for i in seeds}
    print(f"[vit_prune] dense pairs and {len(platon)} PLATON run(s)")
    records = _vit.execute(dense_tasks, args, out)
    _vit.train_runs(list(platon.values()), args)

    # Stage 2: the masks on the pretrained weights, retrained fixed, as pairs.
    mask_tasks, oneshot_acc = [], {}
    for (r, i), cfg in platon.items():
        dense_a = paths.run_dir(dense_tasks[i]["run_a"], args.results)
        magnitude = oneshot.save_magnitude_mask(dense_a, r, args.results)
        mask = oneshot.load_mask(paths.mask_dir(magnitude.split(":", 1)[1], args.results))
        oneshot_acc[(r, i)] = oneshot.masked_accuracy(dense_a, mask, args.results, device=args.device)["accuracy"]
        for kind, source in (("platon", f"run:{cfg.run_name()}"), ("magnitude", magnitude)):
            lottery = _vit.pinned(replace(pruned, prune="mask", mask_from=source), args.results)
            mask_tasks.append(_vit.pair_task("vit_prune", scale.name, f"{_label(r)} {kind} mask", i, lottery,
                                             args.device, {"mask": kind, "ratio": r}))
    print(f"[vit_prune] {len(mask_tasks)} masked pair(s): PLATON's and magnitude's masks on the pretrained weights")
    records += _vit.execute(mask_tasks, args, out)
    tasks = dense_tasks + mask_tasks
    atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks}, indent=1) + "\n")
    failed = [r for r in records if r["status"] != "ok"]

    df = artefacts.collect(tasks, args.results)
    artefacts.save_frame(df, out / paths.SWEEP_RESULTS)
    rows = _rows(df, platon, oneshot_acc, args.results, read_jsonl)
    rows.to_csv(out / "pairs.csv", index=False)
    table = tables.prune_table(rows, args.seeds >= 2)
    write_table(table, out / table.name)
    written = {table.name: paths.table_files(out / table.name)[".md"].read_text()}
    curves, figures = artefacts.collect_curves(tasks, args.results), []
    if not curves.empty:
        ratios = curves["ratio"].fillna(1.0) if "ratio" in curves else pd.Series(1.0, index=curves.index)
        curves["mask"] = [f"{m} {_label(r)}" if m != "none" else "dense" for m, r in zip(curves["mask"], ratios)]
        figures = tables.curves_figure(curves, out / "curves", hue="mask")

    wall = time.time() - t0
    run_names = [t[r] for t in tasks for r in ("run_a", "run_b")] + [c.run_name() for c in platon.values()]
    fields = {**_vit.summary_fields("vit_prune", TITLE, scale, args), "tasks": len(tasks),
              "ok": len(tasks) - len(failed), "failed": [{k: r.get(k) for k in ("cell", "pair", "error")}
                                                          for r in failed],
              "data": data, "tables": written, "figures": [str(f) for f in figures],
              "train_seconds": _vit.train_seconds(run_names + _vit.pretraining_runs(scale), args.results),
              "hardware": report.hardware(run_names, args.results)}
    trained = len(_vit.done_runs(args.results) - done_before)
    report.update_summary(out, fields, {"started": t0, "wall_s": round(wall, 2), "executor": args.executor,
                                        "jobs": args.jobs, "runs_trained": trained, "pairs": len(tasks)})
    print(f"\nvit_prune:\n\n{written['vit_prune']}")
    for f in figures:
        print(f)
    print(f"[vit_prune] {len(tasks) - len(failed)}/{len(tasks)} pairs finished, {trained} runs trained now; wall "
          f"time {wall / 60:.1f} min; outputs in {out}")
    return 1 if failed else 0


def _rows(df, platon: dict, oneshot_acc: dict, root, read_jsonl):
    """One row per (ratio, seed pair): the table's columns, accuracies and barriers in %."""
    import pandas as pd

    from lmc import paths

    ok = df[df.status == "ok"]

    def pair(cell: str, i: int, split: str):
        at = ok[(ok.cell == cell) & (ok.pair == i) & (ok.split == split)]
        return at.iloc[0] if len(at) else None

    def final_acc(name: str) -> float:
        rows = read_jsonl(paths.run_dir(name, root) / paths.METRICS)
        return 100.0 * rows[-1]["test_acc"] if rows else float("nan")

    out = []
    for i in sorted({i for _, i in platon}):
        dense_test, dense_train = pair("dense", i, "test"), pair("dense", i, "train")
        if dense_test is not None:
            acc_a, both = 100 * dense_test.acc_a, 50 * (dense_test.acc_a + dense_test.acc_b)
            out.append({"ratio": 1.0, "pair": i, "platon_acc": acc_a, "magnitude_oneshot_acc": acc_a,
                        "lottery_acc": both, "magnitude_lottery_acc": both,
                        "lottery_test_barrier": dense_test.error_barrier_pct,
                        "lottery_train_barrier": dense_train.error_barrier_pct,
                        "magnitude_test_barrier": dense_test.error_barrier_pct})
        for r in sorted({r for r, _ in platon}, reverse=True):
            row = {"ratio": r, "pair": i, "platon_acc": final_acc(platon[(r, i)].run_name()),
                   "magnitude_oneshot_acc": 100.0 * oneshot_acc[(r, i)]}
            for kind, prefix in (("platon", "lottery"), ("magnitude", "magnitude")):
                test, train = pair(f"{_label(r)} {kind} mask", i, "test"), pair(f"{_label(r)} {kind} mask", i, "train")
                if test is not None:
                    row["lottery_acc" if kind == "platon" else "magnitude_lottery_acc"] = 50 * (test.acc_a + test.acc_b)
                    row[f"{prefix}_test_barrier"] = test.error_barrier_pct
                    if kind == "platon":
                        row["lottery_train_barrier"] = train.error_barrier_pct
            out.append(row)
    return pd.DataFrame(out)
