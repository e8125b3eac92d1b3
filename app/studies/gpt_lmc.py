"""`lmc reproduce gpt_lmc`: seed 002's question with its faults mended. Are two GPT-style
decoders trained on tiny-shakespeare under different SGD noise linearly connected when they
start from initialisation, from a parent trained k steps, or from a pretrained model?

    lmc reproduce gpt_lmc --scale quick                # TinyGPT, characters, CPU, pretraining included
    lmc reproduce gpt_lmc --scale quick --seeds 3      # + 95% bootstrap intervals per row
    lmc reproduce gpt_lmc --scale paper --checkpoint ~/models/gpt2 --device cuda

Rows, one LMC pair per seed pair i (init seed i, children (2i+1, 2i+1) and (2i+2, 2i+2), as in
every grid): **from scratch**; **spawned at k**, the children continuing from a parent trained
k steps under its own noise (seeds 0, ``train_parent``); **fine-tuned**, both children starting
from a pretrained model (``init_from``, pinned by content). Every run is an ordinary run and every
pair an ordinary interpolation (11 α, every test window and an evenly spaced train subset of as
many windows), so a rerun trains nothing. Columns (``analysis.gpt_lmc``): loss barrier and
token-error barrier on both splits, the endpoints' losses; figure: test loss along α per row.

Seed 002's settings in every run: AdamW β = (0.9, 0.95) with nanoGPT's weight decay 0.1 on
matrices and embeddings, linear warm-up over the first 10% of the steps, then cosine from 6e-4
to 6e-5, gradient norm clipped at 1.0, the batch and context of the preset (``PRESET_BATCH_SIZE``).
Warm-up and spawn steps are fractions of ``max_steps``, so ``--set max_steps=N`` scales the whole
study; ``--set`` applies to every run it trains, the pretraining included.

The .betons store windows with ``stride = max(64, block_size)``: an epoch (one window per stored
sample) is then at most ~16k windows of tiny-shakespeare, so the per-epoch test evaluation and
checkpoint, and the loader digest of a run's first two epochs, stay a small part of a run (epochs
only rotate the seeds here; step budgets set the length). At stride = 8, TinyGPT's context, an
epoch would be 125k windows and the digest alone ~10 s of CPU per run.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace as with_fields
from pathlib import Path

from app.studies._gpt_lmc_plan import SCALES, Plan, Row, pair_task, plan_for
from lmc import paths
from lmc.errors import UserError

__all__ = ["SCALES", "TITLE", "check", "execute", "plan_for", "run"]

# The settings of every scale live here; its sha256 goes into the summary, as a grid file's does.
_PLAN_FILE = sys.modules[Plan.__module__].__file__
TITLE = "GPT decoders on tiny-shakespeare: from scratch vs spawned vs fine-tuned (seed 002)"


def check(args) -> None:
    """For ``lmc reproduce`` to call before it writes anything: the same checks as ``run``."""
    plan_for(args)


def _remove_if_empty(out: Path, root) -> None:
    """Undo the empty folders ``lmc reproduce`` made for a study that then refused its input."""
    stop = paths.results_root(root).resolve()
    folder = out.resolve()
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def run(args, out: Path) -> int:
    try:
        plan = plan_for(args)
    except UserError:
        _remove_if_empty(out, args.results)
        raise
    if getattr(args, "dry_run", False):
        _remove_if_empty(out, args.results)
        return _dry_run(plan, args.seeds)
    return execute(plan, args, out)


def _dry_run(plan: Plan, seeds: int) -> int:
    if plan.pretrain is not None:
        print(f"pretraining: {plan.pretrain.run_name()} ({plan.pretrain.dataset}, {plan.pretrain.max_steps} steps)")
    for row in plan.rows:
        cfg = row.config
        name = "named after the pretraining run's content" if plan.pretrain and cfg.init_from else cfg.run_name()
        print(f"{row.key}: {row.label}: {cfg.dataset}, {cfg.max_steps} steps, batch {cfg.batch_size}, "
              f"context {cfg.block_size}; shared settings {name}")
    print(f"{len(plan.rows)} rows x {seeds} pair(s) = {2 * len(plan.rows) * seeds} runs"
          + (" + 1 pretraining run" if plan.pretrain is not None else ""))
    return 0


def execute(plan: Plan, args, out: Path) -> int:
    """Data, pretraining, parents, pairs (``app.sweep.execute``), then the table, figure and summary."""
    from analysis import gpt_lmc as report_gpt
    from analysis import report
    from analysis.artefacts import collect_curves, save_frame
    from analysis.tables import write_table
    from app import sweep
    from beton_builders.prepare import data_summary, ensure_dataset
    from experiments.training import train, train_parent
    from experiments.training.initial import pin
    from lmc.io import atomic_write_text

    root, device, t0 = args.results, args.device, time.time()
    stages, trained = {}, []
    print(f"[gpt_lmc] {TITLE} — scale {plan.scale}: {len(plan.rows)} rows x {args.seeds} seed pair(s)")
    for spec in plan.data:
        ensure_dataset(spec, root)
    stages["data_s"] = round(time.time() - t0, 1)

    rows = list(plan.rows)
    if plan.pretrain is not None:
        t = time.time()
        was_done = (paths.run_dir(plan.pretrain.run_name(), root) / paths.DONE).exists()
        print(f"[gpt_lmc] {plan.pretrain_note}")
        train(plan.pretrain, root, device=device, progress=False)
        trained += [] if was_done else [plan.pretrain.run_name()]
        rows = [with_fields(r, config=pin(r.config, root)) if r.config.init_from else r for r in rows]
        stages["pretraining_s"] = round(time.time() - t, 1)

    t = time.time()
    spawned = [r for r in rows if r.spawn_step]
    for index in range(args.seeds) if spawned else ():
        parent = _parent_of(plan, spawned[0], index)
        ks = [r.spawn_step for r in spawned]
        missing = [k for k in ks if not paths.spawn_checkpoint_path(paths.run_dir(parent.run_name(), root), k).exists()]
        if missing:
            print(f"[gpt_lmc] seed pair {index}: parent {parent.run_name()} to steps {', '.join(map(str, ks))}")
            trained.append(f"{parent.run_name()} (parent to step {max(missing)})")
        train_parent(parent, ks, root, device=device)
    stages["parents_s"] = round(time.time() - t, 1)

    t = time.time()
    plan = with_fields(plan, rows=tuple(rows))
    tasks = [pair_task(plan, row, i, device) for row in rows for i in range(args.seeds)]
    atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks}, indent=1) + "\n")
    slurm = {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_task": args.cpus_per_job,
             "timeout_min": args.timeout_min, "folder": str(out / paths.SUBMITIT_LOGS)}
    records = sweep.execute(tasks, root, executor=args.executor, jobs=args.jobs, events=out / paths.SWEEP_EVENTS,
                            slurm=slurm)
    trained += [name for r in records for name in r.get("trained", [])]
    failed = [r for r in records if r["status"] != "ok"]
    stages["pairs_s"] = round(time.time() - t, 1)

    intervals = args.seeds >= 2
    df = report_gpt.collect(tasks, root)
    save_frame(df, out / paths.SWEEP_RESULTS)
    curves = collect_curves(tasks, root)
    if not curves.empty:
        save_frame(curves, out / paths.GPT_LMC_CURVES)
    table = report_gpt.table(df, [r.label for r in rows], intervals, plan.pretrain_note)
    write_table(table, out / table.name)
    md = paths.table_files(out / table.name)[".md"].read_text()
    figs = report_gpt.figure(curves, out / paths.GPT_LMC_FIGURE, [r.label for r in rows]) if not curves.empty else []
    wall = time.time() - t0
    fields = {"command": "lmc " + " ".join(sys.argv[1:]), "grid": "gpt_lmc", "artefacts": ["gpt_lmc"],
              "title": TITLE, "scale": plan.scale, "notes": plan.notes, "grid_file": _PLAN_FILE,
              "grid_sha256": hashlib.sha256(Path(_PLAN_FILE).read_bytes()).hexdigest(), "overrides": list(args.set or []),
              "seeds": args.seeds, "intervals": intervals, "tasks": len(tasks),
              "ok": len(tasks) - len(failed), "failed": [{k: r.get(k) for k in ("cell", "pair", "error")} for r in failed],
              "datasets": {s.name: data_summary(s.name, root) for s in plan.data}, "pretraining": plan.pretrain_note,
              "tables": {table.name: md}, "figures": [str(f) for f in figs],
              "train_seconds": float(df.drop_duplicates("interpolation").train_seconds.sum()) if len(df) else 0.0,
              "hardware": report.hardware([t[r] for t in tasks for r in ("run_a", "run_b")], root)}
    report.update_summary(out, fields, {"started": t0, "wall_s": round(wall, 2), "executor": args.executor,
                                        "jobs": args.jobs, "runs_trained": len(trained), "trained": trained,
                                        "pairs": len(tasks), "stages": stages})
    legend = "mean ± std over pairs, 95% bootstrap interval" if intervals else "one pair per row"
    print(f"\ngpt_lmc ({legend}):\n\n{md}")
    for f in figs:
        print(f)
    print(f"[gpt_lmc] {len(tasks) - len(failed)}/{len(tasks)} pairs finished, {len(trained)} runs trained now, "
          f"wall time {wall / 60:.1f} min; outputs in {out}")
    if failed:
        print(f"[gpt_lmc] {len(failed)} pair(s) failed; rerun the same command to retry them (finished runs are kept)")
    return 1 if failed else 0


def _parent_of(plan: Plan, row: Row, index: int):
    """The parent every spawned child of seed pair ``index`` shares (its spawn step aside)."""
    from experiments.config import TrainConfig

    return TrainConfig.from_dict(pair_task(plan, row, index, "cpu")["config"]).parent()

