"""`lmc reproduce vit_lmc`: are two fine-tuned ViTs linearly mode-connected? (seed 001)

    lmc reproduce vit_lmc --scale quick                 # pretrains here first (cached), then the pairs
    lmc reproduce vit_lmc --scale quick --seeds 3       # + 95% bootstrap intervals and k* on them
    lmc reproduce vit_lmc --scale paper --checkpoint /data/vit-base-patch16-224-in21k --device cuda

Rows: the initialisation of the fine-tuning pairs, random (the init seed's draw) or pretrained
(``_vit.py``: a ViT pretrained here on Tiny-ImageNet at the quick scale, the ImageNet-21k
checkpoint at the paper scale); each pair shares its start and differs in its order and
augmentation seeds (AdamW, the ``vit`` augmentation, clean test images). Columns: train and test
error and loss barriers over 11 α, the endpoints' accuracies, and for the random init where LMC
emerges: ``app.emergence.measure`` spawns two children from one parent after k steps, and k* is
the first k from which the barrier stays below 2% on both splits (on the 95% interval with --seeds >= 2).
Figures: error and loss along α (``curves``), barrier vs spawn step (``emergence``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from app.studies import _vit
from lmc.config import replace

TITLE = "ViT fine-tuning pairs (seed 001): LMC from a pretrained vs a random initialisation, and where it emerges"
SCALES = {"quick": _vit.QUICK.notes, "paper": _vit.PAPER_NOTES}


def check(args) -> None:
    """Everything that can be refused, refused before a file is written."""
    _vit.scale_for(args)


def run(args, out: Path) -> int:
    from analysis import artefacts, report
    from analysis import emergence as emergence_report
    from analysis import vit as tables
    from analysis.tables import write_table
    from app.emergence import measure
    from experiments.training import task_for
    from lmc import paths
    from lmc.io import atomic_write_text

    t0 = time.time()
    scale = _vit.scale_for(args)
    done_before = _vit.done_runs(args.results)
    print(f"[vit_lmc] {TITLE} — scale {scale.name}: {args.seeds} seed pair(s)\n[vit_lmc] {scale.notes}")
    data = _vit.prepare_data(scale, args.results)
    if overlaps(scale, args):
        tasks, records, rows = _overlapped(scale, args, out)
    else:
        cells = _vit.finetune_configs(scale, args.results, args.device)
        tasks = _vit.pair_tasks("vit_lmc", scale.name, cells, args.seeds, args.device, axis="init")
        atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks}, indent=1) + "\n")
        records = _vit.execute(tasks, args, out)
        # Where LMC emerges for the random init; its k = 0 pairs are the random row's pairs (cached).
        print(f"[vit_lmc] emergence of LMC from the random init: spawn steps {', '.join(map(str, scale.spawn_steps))}")
        rows = measure(scale.finetune, scale.spawn_steps, args.seeds, args.results, device=args.device)
    failed = [r for r in records if r["status"] != "ok"]
    emergence, k_star = emergence_report.emergence_table(rows)
    if args.seeds < 2:  # no interval from one pair: k* on its barrier alone (below 2% from there on), said so
        below = ((emergence.train_error_barrier < 2.0) & (emergence.test_error_barrier < 2.0)).tolist()
        stays = [all(below[i:]) for i in range(len(below))]
        k_star = int(emergence.spawn_step.iloc[stays.index(True)]) if True in stays else None
    steps_per_epoch = task_for(scale.finetune, args.results).steps_per_epoch
    basis = "95% interval" if args.seeds >= 2 else "one pair, no interval"
    k_text = (f"{k_star} steps ({k_star / steps_per_epoch:.2f} epochs; {basis})" if k_star is not None else
              f"not within the spawn steps tried (up to {max(scale.spawn_steps)}; {basis})")
    emergence_files = emergence_report.write(emergence, rows, out / "emergence")

    df = artefacts.collect(tasks, args.results)
    artefacts.save_frame(df, out / paths.SWEEP_RESULTS)
    table = tables.lmc_table(df, args.seeds >= 2, k_text)
    written = {}
    for t in (table,):
        write_table(t, out / t.name)
        written[t.name] = paths.table_files(out / t.name)[".md"].read_text()
    emergence_md = emergence_report.printable(emergence).to_markdown(index=False)
    written["vit_emergence"] = emergence_md + f"\n\nLMC emerges for the random init at k* = {k_text}\n"
    curves = artefacts.collect_curves(tasks, args.results)
    figures = tables.curves_figure(curves, out / "curves") if not curves.empty else []
    figures.append(emergence_files["figure"])

    wall = time.time() - t0
    run_names = [t[r] for t in tasks for r in ("run_a", "run_b")]
    fields = {**_vit.summary_fields("vit_lmc", TITLE, scale, args), "tasks": len(tasks),
              "ok": len(tasks) - len(failed), "failed": [{k: r.get(k) for k in ("cell", "pair", "error")}
                                                          for r in failed],
              "data": data, "tables": written, "figures": [str(f) for f in figures], "k_star": k_text,
              "train_seconds": _vit.train_seconds(run_names + _vit.pretraining_runs(scale), args.results),
              "hardware": report.hardware(run_names, args.results)}
    trained = len(_vit.done_runs(args.results) - done_before)  # pretraining, pairs and spawned children
    report.update_summary(out, fields, {"started": t0, "wall_s": round(wall, 2), "executor": args.executor,
                                        "jobs": args.jobs, "runs_trained": trained, "pairs": len(tasks)})
    print(f"\nvit_lmc:\n\n{written['vit_lmc']}\nemergence (random init):\n\n{written['vit_emergence']}")
    for f in figures:
        print(f)
    print(f"[vit_lmc] {len(tasks) - len(failed)}/{len(tasks)} pairs finished; wall time {wall / 60:.1f} min; "
          f"outputs in {out}")
    return 1 if failed else 0


# -- the overlapped schedule (--jobs >= 2, local) ------------------------------------------------

def overlaps(scale, args) -> bool:
    """Pretraining here, two or more local workers: the random init's side needs no pretrained
    weights, so it trains while the pretraining does (one core each on this 2-core CPU: the quick
    scale took 16 min 20 s instead of 22 min 49 s, docs/vit.md). Every run is the same
    hash-named run either way, bit for bit (tested)."""
    return scale.pretrain is not None and args.jobs >= 2 and args.executor == "local"


def _overlapped(scale, args, out: Path):
    """(tasks, records, emergence rows) as the plain schedule's, sooner: the pool's workers take,
    in order, the pretraining, the random init's pairs, its emergence (parent, children and their
    interpolations), and, as soon as the pretraining has finished, the pretrained pairs."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from app import sweep
    from lmc import paths
    from lmc.io import atomic_write_text

    root, device = str(args.results) if args.results else None, args.device
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    events = str(out / paths.SWEEP_EVENTS)
    steps = ", ".join(map(str, scale.spawn_steps))
    print(f"[vit_lmc] {args.jobs} workers: pretraining, and meanwhile the random init's pairs and emergence "
          f"(spawn steps {steps}); then the pretrained pairs")
    pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        pretraining = pool.submit(_pretrain_job, scale, root, device, threads)
        random_tasks = _vit.pair_tasks("vit_lmc", scale.name, {"random": scale.finetune}, args.seeds, device,
                                       axis="init")
        pending = {pool.submit(sweep.run_tasks, [t], root, threads, events): t for t in random_tasks}
        emergence = pool.submit(_emergence_job, scale.finetune.to_dict(), scale.spawn_steps, args.seeds, root,
                                device, threads)
        records, tasks, started = [], random_tasks, False
        while pending or not started:
            done, _ = wait(list(pending) + ([] if started else [pretraining]), return_when=FIRST_COMPLETED)
            if pretraining in done and not started:  # the pretrained pairs can start now
                started = True
                pretrained = _vit.pinned(replace(scale.finetune, init_from=pretraining.result()), args.results)
                more = _vit.pair_tasks("vit_lmc", scale.name, {"pretrained": pretrained}, args.seeds, device,
                                       axis="init")
                pending.update({pool.submit(sweep.run_tasks, [t], root, threads, events): t for t in more})
                tasks = random_tasks + more  # the plain schedule's order (table rows)
                atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks}, indent=1) + "\n")
                print(f"[vit_lmc] pretraining finished; {len(more)} pretrained pair(s) queued")
            for future in done & pending.keys():
                task = pending.pop(future)
                try:
                    records.extend(future.result())
                except Exception as exc:  # a worker that died fails its pair only, as in app.sweep
                    records.append(sweep.task_failed(task, f"worker died: {type(exc).__name__}: {exc}"))
                print(sweep.progress_line(records[-1], len(records), 2 * len(random_tasks)))
        rows = emergence.result()
    finally:
        sweep.close_pool(pool)
    return tasks, records, rows


def _pretrain_job(scale, root, device, threads) -> str:
    from app import sweep

    sweep.worker_setup(threads)
    return _vit.pretrained_start(scale, root, device)


def _emergence_job(cfg: dict, steps, seeds, root, device, threads):
    from app import sweep
    from app.emergence import measure
    from experiments.config import TrainConfig

    sweep.worker_setup(threads)
    return measure(TrainConfig.from_dict(cfg), steps, seeds, root, device=device)
