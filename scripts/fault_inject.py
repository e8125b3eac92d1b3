#!/usr/bin/env python
"""Fault injection: SIGKILL `lmc train` / `lmc train-pair` at chosen moments, rerun, check.

    .venv/bin/python scripts/fault_inject.py --mode train --kills 20 --seed 0
    .venv/bin/python scripts/fault_inject.py --mode pair --kills 5 --seed 0

First an uninterrupted reference run in a results root of its own. Then, per kill: a fresh
(empty) results root, the same command (`python -m app.cli`, the embedded MNIST-5k, a small
MLP), SIGKILL to its whole process group at a moment drawn with --seed, then the command again
to completion. A kill *held* when:

* weights: every run's final.pt holds bitwise the reference's model weights;
* metrics: every run's metrics.jsonl has one row per epoch, in order, equal to the reference's
  (the timing column aside);
* leftovers: the results root holds exactly the reference's files (no `.*.tmp`, nothing
  stray, nothing missing) and no new FFCV shared-memory block is left in /dev/shm.

Moments (the strategy of each kill is drawn too):

* uniform: a time drawn uniformly within the reference command's wall time;
* tmp: the moment the k-th temporary file of an atomic write appears (k drawn): of a .beton,
  of a checkpoint (epoch or spawn) or of final.pt;
* metrics: the moment the k-th metrics row is appended, before that epoch's checkpoint.

Prints one line per kill (strategy, moment, what was in progress, verdict) and
"N of M held" for the mode; exits 1 when any kill did not hold.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmc import paths  # noqa: E402

# Temporary files of atomic writes, by kind: (their name's start, the folders they appear in).
TMP_KINDS = {"beton": ((".train.beton.", ".test.beton."), "betons/*"),
             "checkpoint": ((".epoch_", ".step_"), f"runs/*/{paths.CHECKPOINTS}"),
             "final": ((".final.pt.",), "runs/*")}


def command(mode: str, epochs: int) -> list[str]:
    # Width 1024: checkpoints of ~15 MB take long enough to write for a watcher to catch.
    common = ["--epochs", str(epochs), "--width", "1024", "--batch-size", "128", "--quiet"]
    if mode == "train":
        return ["train", *common]
    return ["train-pair", *common, "--spawn-step", "40"]  # a parent phase of 40 steps, then A and B


def start(argv: list[str], root: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "app.cli", *argv, "--results", str(root)], cwd=REPO,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


SHM_PREFIXES = ("psm_", "lmc-beton-")


def shm() -> set[str]:
    """Shared-memory blocks of .beton writers (FFCV's writer keeps its metadata in one: ours are
    named ``lmc-beton-<pid>-*``, an unpatched FFCV's are Python's anonymous ``psm_*``) that no live
    process maps: leaked ones. Blocks in use by other programs on a shared machine, and their
    semaphores (``sem.*``), are not counted."""
    shm_dir = Path("/dev/shm")
    if not shm_dir.is_dir():
        return set()
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.rsplit("/", 1)[-1].strip() for line in maps.read_text().splitlines()
                          if any(f"/dev/shm/{prefix}" in line for prefix in SHM_PREFIXES))
        except OSError:  # a process that exited meanwhile
            continue
    return {p.name for prefix in SHM_PREFIXES for p in shm_dir.glob(prefix + "*")} - mapped


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def metric_rows(root: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in root.glob("runs/*/metrics.jsonl"))


def wait_for(proc: subprocess.Popen, root: Path, strategy: tuple, t_ref: float) -> float | None:
    """Poll until the strategy's moment; return the time since start, or None if the command
    finished first."""
    t0 = time.perf_counter()
    kind, target = strategy[0], strategy[-1]
    seen, counted = set(), 0
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if kind == "uniform":
            if now >= target * t_ref:
                return now
            time.sleep(0.002)
            continue
        if kind == "tmp":
            prefixes, folders = TMP_KINDS[strategy[1]]
            for folder in root.glob(folders):
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith(prefixes) and entry.name.endswith(".tmp") and entry.name not in seen:
                            seen.add(entry.name)
                            if len(seen) >= target:
                                return now
        elif kind == "metrics":
            counted = metric_rows(root) if root.is_dir() else 0
            if counted >= target:
                return now
        time.sleep(0.0002)
    return None


def in_progress(root: Path) -> str:
    """What the killed command was doing, from what it left on disk."""
    tmps = tmp_files(root)
    if tmps:
        return "writing " + ", ".join(sorted(p.name.split(".")[1] + "." + p.name.split(".")[2] for p in tmps))
    runs = sorted(p for p in root.glob("runs/*") if p.is_dir() and not p.name.startswith("."))
    if not runs:
        return "start-up (data)" if (root / "betons").exists() else "start-up"
    parts = []
    for run in runs:
        rows = len((run / paths.METRICS).read_bytes().splitlines()) if (run / paths.METRICS).exists() else 0
        ckpts = sorted(p.stem for p in (run / paths.CHECKPOINTS).glob("*.pt"))
        last = int(ckpts[-1].split("_")[1]) if ckpts and ckpts[-1].startswith("epoch_") else 0
        state = "done" if (run / paths.DONE).exists() else f"{rows} rows, checkpoint {ckpts[-1] if ckpts else '-'}"
        if rows > last and not (run / paths.DONE).exists():
            state += " (metrics ahead of checkpoint)"
        parts.append(f"{run.name[-6:]}: {state}")
    return "; ".join(parts)


def compare(root: Path, ref: Path, shm_before: set[str]) -> list[str]:
    """What did not hold, as short phrases (empty: held)."""
    import torch

    problems = []
    for run in sorted(p for p in ref.glob("runs/*") if (p / paths.FINAL).exists()):
        mine = root / "runs" / run.name
        if not (mine / paths.FINAL).exists():
            problems.append(f"weights: {run.name} has no final.pt")
            continue
        a, b = (torch.load(p / paths.FINAL, weights_only=False)["model"] for p in (run, mine))
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"weights: {run.name} differs from the reference")
        rows = [json.loads(line) for line in (mine / paths.METRICS).read_text().splitlines() if line.strip()]
        want = [json.loads(line) for line in (run / paths.METRICS).read_text().splitlines()]
        if [r.get("epoch") for r in rows] != [r["epoch"] for r in want]:
            problems.append(f"metrics: {run.name} epochs {[r.get('epoch') for r in rows]}")
        elif [{k: v for k, v in r.items() if k != "seconds"} for r in rows] != \
                [{k: v for k, v in r.items() if k != "seconds"} for r in want]:
            problems.append(f"metrics: {run.name} values differ from the reference")
    extra, missing = listing(root) - listing(ref), listing(ref) - listing(root)
    if extra:
        problems.append("leftovers: " + ", ".join(sorted(extra)))
    if missing:
        problems.append("missing: " + ", ".join(sorted(missing)))
    leaked = sorted(shm() - shm_before)
    if leaked:
        # Reported, not removed: on a shared machine another program may have leaked it.
        problems.append("leftovers: /dev/shm/" + ", /dev/shm/".join(leaked))
    return problems


def events(ref: Path) -> dict[str, int]:
    """How often the reference command did each thing a strategy can wait for."""
    rows = metric_rows(ref)
    return {"metrics": rows, "beton": 2, "final": len(list(ref.glob(f"runs/*/{paths.FINAL}"))),
            # one checkpoint per logged epoch, plus the parent's spawn checkpoints
            "checkpoint": rows + len(list(ref.glob(f"runs/*/{paths.CHECKPOINTS}/step_*.pt")))}


def draw(counts: dict[str, int], rng: random.Random, allowed: list[str]) -> tuple:
    kind = rng.choice(allowed)
    if kind == "uniform":
        return ("uniform", rng.random())
    if kind == "metrics":
        return ("metrics", rng.randint(1, counts["metrics"]))
    what = rng.choice(["beton", "checkpoint", "checkpoint", "final"])
    return ("tmp", what, rng.randint(1, counts[what]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("train", "pair"), default="train")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--strategies", default="uniform,tmp,metrics", help="comma-separated subset")
    p.add_argument("--workdir", default=None, help="where the results roots go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the results roots")
    args = p.parse_args(argv)
    allowed = args.strategies.split(",")
    if args.kills < 1 or not set(allowed) <= {"uniform", "tmp", "metrics"}:
        p.error("--kills must be >= 1 and --strategies a subset of uniform,tmp,metrics")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmc-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    argv_cmd = command(args.mode, args.epochs)
    rng = random.Random(args.seed)
    print(f"# fault injection: lmc {' '.join(argv_cmd)}; {args.kills} kills, seed {args.seed}; "
          f"{os.cpu_count()} CPUs; work in {work}")

    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.perf_counter()
    if start(argv_cmd, ref, work / "reference.log").wait() != 0:
        print(f"the reference run failed: see {work / 'reference.log'}")
        return 2
    t_ref = time.perf_counter() - t0
    counts = events(ref)
    print(f"# reference: {t_ref:.1f} s; " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    held, missed, tally = 0, 0, {"weights": 0, "metrics": 0, "leftovers": 0, "missing": 0, "rerun": 0}
    for i in range(1, args.kills + 1):
        strategy = draw(counts, rng, allowed)
        root = work / f"kill{i:02d}"
        shm_before = shm()
        for attempt in range(3):  # a moment can be missed (a write faster than the watcher): draw again
            shutil.rmtree(root, ignore_errors=True)
            proc = start(argv_cmd, root, work / f"kill{i:02d}.log")
            at = wait_for(proc, root, strategy, t_ref)
            if at is not None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # it finished in the same instant
                    pass
            proc.wait()
            if at is not None:
                break
            missed += 1
            strategy = ("uniform", rng.random()) if attempt == 1 else draw(counts, rng, allowed)
        doing = in_progress(root) if at is not None else "finished before the moment came (3 tries)"
        rerun = start(argv_cmd, root, work / f"kill{i:02d}.log").wait()
        problems = compare(root, ref, shm_before) if rerun == 0 else [f"rerun: exit {rerun}, see kill{i:02d}.log"]
        for key in {problem.split(":")[0] for problem in problems}:
            tally[key] += 1
        held += not problems
        what = ":".join(str(round(s, 2) if isinstance(s, float) else s) for s in strategy)
        when = f"{at:.2f} s" if at is not None else "-"
        verdict = "held" if not problems else "FAILED: " + "; ".join(problems)
        print(f"kill {i:2d}/{args.kills} [{what}] at {when}, in progress: {doing} -> {verdict}", flush=True)
        if not args.keep and not problems:
            shutil.rmtree(root, ignore_errors=True)
    counts = ", ".join(f"{k} {args.kills - v}/{args.kills}" for k, v in tally.items())
    print(f"{args.mode}: {held} of {args.kills} held ({counts}; {missed} moment(s) missed and redrawn)")
    if not args.keep and held == args.kills:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if held == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
