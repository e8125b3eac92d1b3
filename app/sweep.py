"""Run a grid: build its data, train every pair, interpolate it; locally or on Slurm (submitit).

One *task* is one LMC pair of one cell: train child A, train child B, interpolate them (for a
grid with ``pairing = "different_init"``: child B has its own init seed, and the pair is then
aligned by weight matching and interpolated again, ``experiments.align``). Tasks
are plain dicts (JSON-able, picklable), so a local process pool, submitit's local executor and
Slurm array jobs all run the same function, :func:`run_tasks`, on a shared results directory.
With ``--replicas N|auto``, :func:`run_batches` first trains the tasks' compatible runs as
replica batches (``experiments.training.train_replicas``); the tasks then find them finished.

Never twice, never clobbered, with any number of workers on one results directory:
* the trainer holds a flock per run directory (a second worker waits, then finds it DONE);
* a worker holds a flock per pair while it works on it; workers first *try* each pair's lock
  and move on to the next pair when it is taken, coming back to it at the end;
* interpolation files are written atomically (temporary file + rename), and only by the
  holder of the pair's lock, after it has checked that they are not there yet.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from beton_builders.prepare import data_summary, ensure_dataset
from experiments.config import TrainConfig
from experiments.grids import Grid, pair_seeds
from experiments.pairs import child_configs
from lmc import paths
from lmc.config import replace
from lmc.errors import UserError
from lmc.io import append_jsonl, exclusive_lock, try_lock

EXECUTORS = ("local", "slurm", "submitit-local")


class DataMissingError(UserError):
    """A dataset of the grid cannot be built here; the message says what to place where."""


# -- data ---------------------------------------------------------------------------------

def prepare_data(grid: Grid, root=None, *, skip_missing: bool = False) -> tuple[dict, dict]:
    """Build every dataset of the grid first. Returns ({name: summary}, {name: why missing})."""
    from lmc.manifest import ManifestError

    used, missing = {}, {}
    for name in grid.datasets():
        spec = grid.spec_for(name)
        try:
            ensure_dataset(spec, root)
            used[name] = data_summary(name, root)
        except (ManifestError, ValueError) as exc:
            missing[name] = f"{spec.describe()}: {exc}"
    if missing and not skip_missing:
        lines = "; ".join(f"{k}: {v}" for k, v in missing.items())
        raise DataMissingError(f"{grid.artefact} at scale {grid.scale} needs data this machine lacks ({lines}). "
                               f"Place the files as described and rerun, or pass --skip-missing-data to run "
                               f"the cells whose data is here (the report lists the skipped ones)")
    return used, missing


# -- tasks --------------------------------------------------------------------------------

# Weight matching's seed for the pairs of a different-init grid (it orders the visits only).
ALIGN_SEED = 0


def plan_tasks(grid: Grid, num_seeds: int, device: str = "auto") -> list[dict]:
    """One task per cell and seed pair, in cell order; ``device`` is where the workers train."""
    if num_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {num_seeds}")
    tasks = []
    for cell in grid.cells:
        for index in range(num_seeds):
            init_seed, seeds_a, seeds_b = pair_seeds(index)
            aligned = {}
            if grid.pairing == "different_init":
                # Pair i: inits 2i and 2i+1, so no two runs of the sweep share an initialisation.
                init_seed, aligned = 2 * index, {"init_seed_b": 2 * index + 1, "align_seed": ALIGN_SEED}
            shared = replace(cell.config, init_seed=init_seed)
            task = {"grid": grid.path.stem, "scale": grid.scale, "cell": cell.key, "labels": dict(cell.labels),
                    "pair": index, "config": shared.to_dict(), "seeds_a": list(seeds_a), "seeds_b": list(seeds_b),
                    "num_alphas": grid.num_alphas, "device": device, **aligned}
            a, b = task_children(task)
            task.update(run_a=a.run_name(), run_b=b.run_name(),
                        interpolation=paths.interpolation_name(a.run_name(), b.run_name(), grid.num_alphas))
            if aligned:
                task["aligned_interpolation"] = paths.interpolation_name(
                    a.run_name(), paths.aligned_name(a.run_name(), b.run_name(), ALIGN_SEED), grid.num_alphas)
            tasks.append(task)
    return tasks


def task_children(task: dict) -> tuple[TrainConfig, TrainConfig]:
    """The two children of a task; child B of a different-init pair gets its own init seed."""
    a, b = child_configs(TrainConfig.from_dict(task["config"]), tuple(task["seeds_a"]), tuple(task["seeds_b"]))
    if "init_seed_b" in task:
        b = replace(b, init_seed=task["init_seed_b"])
    return a, b


def _pair_lock(task: dict, root) -> Path:
    return paths.lock_path(paths.interpolation_dir(task["interpolation"], root))


def _run_locked(task: dict, root, events: Path | None) -> dict:
    """Train both children and interpolate them; the caller holds the pair's lock."""
    from experiments.training import train

    t0 = time.perf_counter()
    record = {"cell": task["cell"], "pair": task["pair"], "run_a": task["run_a"], "run_b": task["run_b"],
              "interpolation": task["interpolation"], "host": socket.gethostname(), "pid": os.getpid(),
              "trained": [], "interpolated": False, "status": "ok"}
    try:
        runs = []
        for child in task_children(task):
            # Under the pair lock, "not DONE before, DONE after" means this worker trained it.
            was_done = (paths.run_dir(child.run_name(), root) / paths.DONE).exists()
            runs.append(train(child, root, device=task["device"], progress=False))
            if not was_done:
                record["trained"].append(runs[-1].name)
        names = [task[k] for k in ("interpolation", "aligned_interpolation") if k in task]
        if not all((paths.interpolation_dir(n, root) / paths.BARRIERS).exists() for n in names):
            if "aligned_interpolation" in task:  # A–B and A–π(B), both written by the alignment
                from experiments.align import align_runs

                align_runs(runs[0], runs[1], seed=task["align_seed"], num_alphas=task["num_alphas"], root=root,
                           progress=False, device=task["device"])
            else:
                from experiments.interpolate import interpolate_runs

                interpolate_runs(runs[0], runs[1], num_alphas=task["num_alphas"], root=root, progress=False,
                                 device=task["device"])
            record["interpolated"] = True
    except Exception as exc:  # one failed pair must not lose the others' results
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["finished"] = time.time()
    if events is not None:
        append_jsonl(events, record)
    return record


def worker_setup(threads: int) -> None:
    """The numerics profile first (a submitit job is a fresh interpreter: the profile goes in
    before torch loads; a no-op where the parent's environment already carries it), then the
    thread pools sized to this worker's share."""
    from lmc import numerics

    numerics.apply()
    if threads:
        import numba
        import torch

        # Both pools sized to this worker's share: the loader's numba threads would otherwise
        # take every core of the machine in each of the `jobs` workers. Under the pinned profile
        # torch's count is the profile's (it decides the weights), not the share.
        if numerics.mode() == "native":
            torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    numerics.configure_torch()


def run_tasks(tasks: list[dict], root=None, threads: int = 0, events: str | None = None) -> list[dict]:
    """Worker entry point (pool, submitit): every task of the list, skipping busy pairs at first."""
    worker_setup(threads)
    events_path = Path(events) if events else None
    done, deferred = [], []
    for task in tasks:
        with try_lock(_pair_lock(task, root)) as held:
            if held:
                done.append(_run_locked(task, root, events_path))
            else:
                deferred.append(task)
    # Pairs another worker was busy with: wait for it, then find them finished (or finish them).
    for task in deferred:
        with exclusive_lock(_pair_lock(task, root)):
            done.append(_run_locked(task, root, events_path))
    return done


# -- replica batches (--replicas) ------------------------------------------------------------

def check_replicas(value) -> int | str:
    """``--replicas``: a positive integer or ``auto`` (a size chosen from the device)."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or str(n) != str(value).strip():
        raise UserError(f"--replicas {value!r}: expected a positive integer or 'auto'")
    return n


def plan_batches(tasks: list[dict], replicas: int | str, executor: str = "local") -> list[dict]:
    """The tasks' runs that the replica engine can train, in batches of compatible runs (same
    ``experiments.training.replicas.batch_key``) of up to ``replicas``; none when that is 1.

    ``auto`` is resolved where the runs train (``auto_replicas``: 1 on a CPU); a local sweep
    that will train on the CPU plans no batch at all, so its pairs spread over the workers as
    without ``--replicas``.
    """
    from experiments.training.replicas import AUTO_MAX, batch_key, stackable

    if replicas == 1 or not tasks:
        return []
    if replicas == "auto" and (executor == "local" or tasks[0]["device"] == "cpu"):
        from experiments.training import resolve_device

        if resolve_device(tasks[0]["device"]).type == "cpu":
            return []
    groups: dict[tuple, dict[str, TrainConfig]] = {}
    for task in tasks:
        cfg = TrainConfig.from_dict(task["config"])
        for child in child_configs(cfg, tuple(task["seeds_a"]), tuple(task["seeds_b"])):
            if stackable(child):
                groups.setdefault(batch_key(child), {})[child.run_name()] = child
    size = AUTO_MAX if replicas == "auto" else replicas
    batches = []
    for members in groups.values():
        cfgs = list(members.values())
        for start in range(0, len(cfgs), size):
            chunk = cfgs[start:start + size]
            if len(chunk) > 1:  # a batch of one is the single-run trainer's, in the pair's own task
                batches.append({"configs": [c.to_dict() for c in chunk], "runs": [c.run_name() for c in chunk],
                                "device": tasks[0]["device"], "replicas": replicas})
    return batches


def run_batches(batches: list[dict], root=None, threads: int = 0, events: str | None = None) -> list[dict]:
    """Worker entry point (pool, submitit): train each batch's runs as replicas of one network."""
    from experiments.training import train_replicas

    worker_setup(threads)
    out = []
    for batch in batches:
        t0 = time.perf_counter()
        record = {"kind": "batch", "runs": batch["runs"], "trained": [], "status": "ok",
                  "host": socket.gethostname(), "pid": os.getpid()}
        try:
            cfgs = [TrainConfig.from_dict(c) for c in batch["configs"]]
            train_replicas(cfgs, root, device=batch["device"], progress=False, max_replicas=batch["replicas"],
                           trained=record["trained"])
        except Exception as exc:  # its pairs' tasks then train the runs one by one
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        record["seconds"] = round(time.perf_counter() - t0, 2)
        record["finished"] = time.time()
        if events:
            append_jsonl(Path(events), record)
        out.append(record)
    return out


def _batch_failed(batch: dict, error: str) -> dict:
    return {"kind": "batch", "runs": batch["runs"], "status": "failed", "trained": [], "error": error}


def _batch_progress(record: dict, i: int, n: int) -> str:
    if record["status"] != "ok":
        return (f"[sweep] batch {i}/{n} FAILED ({record.get('error')}); its pairs will train their runs one by "
                f"one")
    return (f"[sweep] batch {i}/{n}: {len(record['runs'])} runs as one network, trained "
            f"{len(record['trained'])} ({record.get('seconds', 0):.0f} s)")


# -- executors ------------------------------------------------------------------------------

def execute(tasks: list[dict], root=None, *, executor: str = "local", jobs: int = 1, events: Path | None = None,
            slurm: dict | None = None, log=print, replicas: int | str = 1) -> list[dict]:
    """Run ``tasks`` with ``jobs`` workers; return one record per task (failed ones included).

    ``replicas`` (N or "auto"): first train the tasks' runs in replica batches of up to N
    (``plan_batches``), then run the tasks, which find those runs finished and interpolate.
    """
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    replicas = check_replicas(replicas)
    root = str(paths.results_root(root))
    events = str(events) if events else None
    batches = plan_batches(tasks, replicas, executor)
    batch_records = _run(run_batches, batches, root, executor, jobs, events, slurm, log, _batch_failed,
                         _batch_progress) if batches else []
    records = _run(run_tasks, tasks, root, executor, jobs, events, slurm, log, task_failed, progress_line)
    # A run trained in a batch counts as trained by this sweep, under the pair it belongs to.
    by_batch = {name for record in batch_records for name in record.get("trained", [])}
    for record in records:
        record["trained"] = record.get("trained", []) + [
            name for name in (record.get("run_a"), record.get("run_b"))
            if name in by_batch and name not in record.get("trained", [])]
    return records


def _run(worker, items: list[dict], root: str, executor: str, jobs: int, events: str | None, slurm: dict | None,
         log, failed, progress) -> list[dict]:
    """``worker(items, root, threads, events)`` over ``items``, locally or with submitit."""
    n = len(items)
    if executor != "local":
        return _submitit(worker, items, root, executor, jobs, events, slurm or {}, log, failed, progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        out = []
        for item in items:
            out.extend(worker([item], root, threads, events))
            log(progress(out[-1], len(out), n))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent may hold torch/numba threads, which fork does not copy safely.
    out = []
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(worker, [item], root, threads, events): item for item in items}
        for future in as_completed(futures):
            try:
                out.extend(future.result())
            except Exception as exc:  # a worker that died (out of memory, killed) fails its item only
                out.append(failed(futures[future], f"worker died: {type(exc).__name__}: {exc}"))
            log(progress(out[-1], len(out), n))
    finally:
        close_pool(pool)
    return out


def task_failed(task: dict, error: str) -> dict:
    return {"cell": task["cell"], "pair": task["pair"], "status": "failed", "trained": [], "error": error}


def close_pool(pool, grace_s: float = 30.0) -> None:
    """Shut the pool down without waiting forever: a worker kept alive after its last task by a
    library thread (seen once with a loader thread spinning at exit) must not hang the sweep,
    whose results are all on disk by then."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown clears it
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def _submitit(worker, items, root, executor, jobs, events, slurm, log, failed, progress) -> list[dict]:
    import submitit

    folder = Path(slurm.get("folder") or paths.results_root(root) / paths.SUBMITIT_LOGS)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm" if executor == "slurm" else "local")
    params = {"timeout_min": int(slurm.get("timeout_min", 24 * 60)),
              "cpus_per_task": int(slurm.get("cpus_per_task", 2))}
    if slurm.get("gpus_per_job"):
        params["gpus_per_node"] = int(slurm["gpus_per_job"])
    if executor == "slurm":
        params["slurm_partition"] = slurm.get("partition")
        params["name"] = "lmc-reproduce"
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    # `jobs` workers, each with a round-robin share of the items (fewer job start-ups than one per item).
    chunks = [items[i::jobs] for i in range(min(jobs, len(items)))]
    submitted = ex.map_array(worker, chunks, [root] * len(chunks), [params["cpus_per_task"]] * len(chunks),
                             [events] * len(chunks))
    log(f"[sweep] submitted {len(submitted)} {executor} job(s): {', '.join(j.job_id for j in submitted)} "
        f"(logs: {folder})")
    out = []
    for job, chunk in zip(submitted, chunks):
        try:
            out.extend(job.result())
        except Exception as exc:  # a job that died (time limit, node failure) fails its items, not the sweep
            out.extend(failed(t, f"job {job.job_id}: {type(exc).__name__}: {str(exc)[-300:]}") for t in chunk)
        for i, record in enumerate(out[len(out) - len(chunk):], start=len(out) - len(chunk) + 1):
            log(progress(record, i, len(items)))
    return out


def progress_line(record: dict, i: int, n: int) -> str:
    if record["status"] != "ok":
        return f"[sweep] {i}/{n} FAILED {record['cell']} pair {record['pair']}: {record.get('error')}"
    what = f"trained {len(record['trained'])} run(s)" if record["trained"] else "runs cached"
    what += ", interpolated" if record.get("interpolated") else ", interpolation cached"
    return f"[sweep] {i}/{n} {record['cell']} pair {record['pair']}: {what} ({record.get('seconds', 0):.0f} s)"
