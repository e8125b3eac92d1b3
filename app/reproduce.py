"""`lmc reproduce` and `lmc report`: regenerate the paper's tables and figures.

    lmc reproduce --list
    lmc reproduce table1 --scale quick --seeds 1 --jobs 2
    lmc reproduce table2 --scale quick --seeds 3          # + 95% bootstrap intervals over the pairs
    lmc reproduce alignment --scale quick --seeds 3       # different-init pairs, before/after weight matching
    lmc reproduce figure3 --scale quick --skip-missing-data
    lmc reproduce table1 --scale paper --executor slurm --partition gpu --gpus-per-job 1 --jobs 24
    lmc reproduce table1 --scale paper --replicas auto --device cuda
    lmc report

One command per artefact: it reads the artefact's grid (experiments/grids/*.toml), validates
every cell, builds the missing .betons, trains what has not run (finished runs are skipped,
interrupted ones resume), interpolates every pair, and writes the tables (CSV, Markdown,
LaTeX) and figures (PNG, PDF) under ``<results>/reproduce/<grid>/<scale>/``.

The folders and the results layout's version stamp are ``lmc.paths``'s.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from lmc import paths
# The results layout, its version stamp and this command's folders belong to lmc.paths.
from lmc.paths import check_layout, sweep_dir

def register(sub) -> None:
    """Add the `reproduce` and `report` subcommands."""
    p = sub.add_parser("reproduce", help="regenerate one of the paper's tables or figures (see --list)")
    p.add_argument("artefact", nargs="?", help="an artefact of --list (a grid or a study), or a .toml grid")
    p.add_argument("--list", action="store_true", help="list the artefacts and their scales, then exit")
    p.add_argument("--scale", default="quick", choices=("quick", "paper"), help="grid scale (default quick)")
    p.add_argument("--seeds", type=int, default=1,
                   help="seed pairs per cell, reported as mean ± std, and with 2 or more a 95%% bootstrap interval "
                        "that decides 'connected' (default 1)")
    p.add_argument("--intervals", action="store_true",
                   help="require the 95%% bootstrap intervals (automatic with --seeds >= 2; an error with --seeds 1)")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers / submitit jobs (default 1)")
    p.add_argument("--executor", default="local", choices=("local", "slurm", "submitit-local"),
                   help="local process pool (default), Slurm through submitit, or submitit's local executor")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per Slurm job (default 0)")
    p.add_argument("--cpus-per-job", type=int, default=2, help="CPUs per submitit job (default 2)")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per submitit job in minutes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field in every cell (e.g. width=256); changes the runs' names")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a local pretrained checkpoint that a study's paper scale starts from (vit_lmc, vit_prune: "
                        "a Hugging Face ViT-B/16 folder; gpt_lmc: a Hugging Face GPT-2 folder); never downloaded")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the runs train: auto picks cuda when available (provenance, not the runs' names)")
    p.add_argument("--replicas", default="1", metavar="N|auto",
                   help="train compatible runs (same data, batch size, linear/mlp shapes, optimiser, epochs) as "
                        "batches of up to N replicas of one stacked network; auto: a size chosen from the "
                        "device, 1 on a CPU (default 1: every run alone); see docs/experiments.md")
    p.add_argument("--skip-missing-data", action="store_true",
                   help="run only the cells whose datasets can be built here; the report lists the others")
    p.add_argument("--dry-run", action="store_true", help="validate the grid and print its cells; run nothing")
    p.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")
    p.set_defaults(func=_reproduce)

    r = sub.add_parser("report", help="write REPRODUCTION.md: every artefact produced so far beside the paper's")
    r.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")
    r.set_defaults(func=_report)


def _list() -> int:
    from app import studies
    from experiments.grids import ARTEFACTS, describe

    for name in ARTEFACTS:
        for row in describe(name):
            cells = f"{row['cells']} cells" if row["cells"] else "no training"
            print(f"{name:15s} {row['scale']:6s} {row['grid']:20s} {cells:12s} {row['notes']}")
    for name in studies.names():
        for scale, notes in studies.get(name).SCALES.items():
            print(f"{name:15s} {scale:6s} {'study (app/studies)':20s} {'':12s} {notes}")
    return 0


def artefact_names() -> list[str]:
    from app import studies
    from experiments.grids import ARTEFACTS

    return [*ARTEFACTS, *studies.names()]


def _reproduce(args) -> int:
    from lmc.errors import UsageError

    if args.list:
        return _list()
    if not args.artefact:
        raise UsageError(f"name an artefact ({', '.join(artefact_names())}) or pass --list")
    from app import studies

    if args.artefact in studies.names():
        study = studies.get(args.artefact)
        if args.scale not in study.SCALES:
            raise UsageError(f"{args.artefact} has scales {', '.join(study.SCALES)}, not {args.scale!r}")
        if hasattr(study, "check"):  # a missing checkpoint or dataset: refused before anything is written
            study.check(args)
        check_layout(args.results)
        out = sweep_dir(args.artefact, args.scale, args.results)
        out.mkdir(parents=True, exist_ok=True)
        return study.run(args, out)
    if args.intervals and args.seeds < 2:
        raise UsageError(f"--intervals needs at least 2 seed pairs per cell to resample, got --seeds {args.seeds}; "
                         f"pass --seeds 3 (or more)")
    from experiments.grids import load_grid

    grid = load_grid(args.artefact, args.scale, tuple(args.set))  # every cell validated before anything runs
    if args.dry_run:
        for cell in grid.cells:
            cfg = cell.config
            print(f"{cell.key}: {cfg.run_name()} ({cfg.dataset}, {cfg.epochs} epochs, batch {cfg.batch_size})")
        print(f"{len(grid.cells)} cells x {args.seeds} pair(s) = {2 * len(grid.cells) * args.seeds} runs")
        return 0
    check_layout(args.results)
    out = sweep_dir(grid.path.stem, grid.scale, args.results)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if grid.kind == "counts":
        return _counts(grid, out, args, t0)
    return _sweep(grid, out, args, t0)


def _common_summary(grid, args) -> dict:
    import sys

    return {"command": "lmc " + " ".join(sys.argv[1:]), "grid": grid.path.stem, "artefacts": list(grid.outputs),
            "title": grid.title, "scale": grid.scale,
            "notes": grid.notes, "grid_file": str(grid.path),
            "grid_sha256": hashlib.sha256(grid.path.read_bytes()).hexdigest(), "overrides": list(args.set)}


def _counts(grid, out: Path, args, t0: float) -> int:
    from analysis import artefacts, report
    from analysis.tables import write_table
    from experiments.models import parameter_table

    rows = parameter_table(tuple(grid.counts.get("input_shape", (3, 32, 32))), int(grid.counts.get("num_classes", 10)))
    table = artefacts.table3(rows)
    write_table(table, out / table.name)
    print(table.wide.to_markdown(index=False))
    report.update_summary(out, {**_common_summary(grid, args), "seeds": 0, "tasks": 0, "ok": 0, "failed": [],
                                "tables": {table.name: paths.table_files(out / table.name)[".md"].read_text()},
                                "hardware": report.hardware([], args.results), "figures": []},
                          {"started": t0, "wall_s": round(time.time() - t0, 2), "executor": "none", "jobs": 0})
    print(paths.table_files(out / table.name)[".csv"])
    return 0


def _sweep(grid, out: Path, args, t0: float) -> int:
    import json

    from analysis import artefacts, report
    from analysis.tables import write_table
    from app import sweep
    from lmc.io import atomic_write_text

    tasks_all = sweep.plan_tasks(grid, args.seeds, args.device)  # seeds checked before any data is built
    replicas = sweep.check_replicas(args.replicas)
    print(f"[reproduce] {grid.title} — scale {grid.scale}: {len(grid.cells)} cells x {args.seeds} seed pair(s)")
    print(f"[reproduce] scale notes: {grid.notes}")
    used, missing = sweep.prepare_data(grid, args.results, skip_missing=args.skip_missing_data)
    for name, why in missing.items():
        print(f"[reproduce] skipping the cells of {name}: {why}")
    tasks = [t for t in tasks_all if t["config"]["dataset"] not in missing]
    atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks, "skipped_data": missing}, indent=1) + "\n")
    slurm = {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_task": args.cpus_per_job,
             "timeout_min": args.timeout_min, "folder": str(out / paths.SUBMITIT_LOGS)}
    records = sweep.execute(tasks, args.results, executor=args.executor, jobs=args.jobs, events=out / paths.SWEEP_EVENTS,
                            slurm=slurm, replicas=replicas)
    failed = [r for r in records if r["status"] != "ok"]

    df = artefacts.collect(tasks, args.results)
    artefacts.save_frame(df, out / paths.SWEEP_RESULTS)
    curves = artefacts.collect_curves(tasks, args.results)
    intervals = args.seeds >= 2  # every barrier cell gets a bootstrap interval over its pairs
    tables, figs = report.build_outputs(grid.layout, list(grid.axes), list(grid.outputs), df, curves, out,
                                        intervals=intervals, known_gaps=grid.known_gaps)
    written = {}
    legend = "ours ± std across pairs, 95% bootstrap CI [paper]" if intervals else "ours ± std across pairs [paper]"
    for table in tables:
        write_table(table, out / table.name)
        written[table.name] = paths.table_files(out / table.name)[".md"].read_text()
        print(f"\n{table.name} ({legend}):\n\n{written[table.name]}")
    wall = time.time() - t0  # data, training, interpolation, tables and figures
    ok = int(len(df[df.status == "ok"].drop_duplicates(["cell", "pair"]))) if len(df) else 0
    fields = {**_common_summary(grid, args), "seeds": args.seeds, "intervals": intervals, "tasks": len(tasks), "ok": ok,
              "failed": [{k: r.get(k) for k in ("cell", "pair", "error")} for r in failed],
              "skipped_data": missing, "data": used, "tables": written, "figures": [str(f) for f in figs],
              "train_seconds": float(df.drop_duplicates(["cell", "pair"]).train_seconds.sum()) if len(df) else 0.0,
              "hardware": report.hardware([t[r] for t in tasks for r in ("run_a", "run_b")], args.results)}
    trained = sum(len(r.get("trained", [])) for r in records)
    report.update_summary(out, fields, {"started": t0, "wall_s": round(wall, 2), "executor": args.executor,
                                        "jobs": args.jobs, "replicas": replicas, "runs_trained": trained,
                                        "pairs": len(tasks),
                                        "pid": os.getpid()})
    for f in figs:
        print(f)
    print(f"[reproduce] {len(tasks) - len(failed)}/{len(tasks)} pairs finished, {trained} runs trained now, "
          f"wall time {wall / 60:.1f} min; outputs in {out}")
    if failed:
        print(f"[reproduce] {len(failed)} pair(s) failed; rerun the same command to retry them "
              f"(finished runs are kept)")
    return 1 if failed else 0


def _report(args) -> int:
    from analysis.report import write_reproduction

    check_layout(args.results)
    path = write_reproduction(args.results)
    print(path)
    return 0
