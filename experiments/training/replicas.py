"""Many runs, one step: R runs of one shape trained together as one stacked network.

    train_replicas([cfg_1, ..., cfg_R], root, device="auto")  -> [run directory of each config]

Runs that share a dataset, augmentation, batch size, model family and shapes, optimiser and
number of epochs (``batch_key``) train as one batch; each replica keeps everything that makes
it *that* run: its initial weights (``builders.build_model`` of its config), its order and
augmentation seeds (``pipelines.make_replica_loader``), its learning rate, momentum, warm-up,
schedule, slope, weight decay and gradient clipping. Every replica's run directory is written
as a single run writes it (config.json, provenance.json, loader_digest.json, metrics.jsonl,
checkpoints two deep, final.pt, DONE), so interpolation, tables and ``lmc report`` read it
unchanged; provenance.json adds ``trained_in: "a batch of R"`` and the batch's members.

Finished runs are skipped; a batch resumes from the newest epoch for which all its replicas
have a good checkpoint, and replicas with no such common epoch train in separate batches.
Each run's lock (``lmc.paths.lock_path``) is held while it trains, so a batch and a single-run
worker never train the same run: a run whose lock is taken is left to its holder, then waited
for. Spawned children (``spawn_step > 0``) and families other than linear/mlp are trained by
the single-run trainer.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from experiments.config import TrainConfig
from experiments.training import checkpoints, rundir
from experiments.training.builders import build_model, build_optimizer, hooks_for
from experiments.training.device import describe, resolve_device, set_deterministic
from experiments.training.hooks import ProgressBar, StopAfterEpochs, TrainState
from experiments.training.loop import run_loop
from experiments.training.replica_batch import (LearningRate, PerReplica, ReplicaEpochLog, ReplicaOptimizers,
                                                ReplicaTask, SharedEvaluation)
from experiments.training.run import Checkpointer, check_device, check_numerics, train, write_final
from experiments.training.schedules import schedule_for
from experiments.training.stacked import STACKABLE, StackedNet, resolve_kernels
from experiments.training.tasks import task_for
from lmc import numerics, paths
from lmc.config import save_json
from lmc.errors import UserError
from lmc.io import try_lock

AUTO_MAX = 64  # replicas per batch at most with --replicas auto on a GPU


def stackable(cfg: TrainConfig) -> bool:
    """Whether the replica engine trains ``cfg`` (others go to the single-run trainer): a
    linear or MLP net of its own initialisation, trained image batch by image batch."""
    return (cfg.model in STACKABLE and cfg.spawn_step == 0 and not cfg.init_from and cfg.prune == "none"
            and cfg.micro_batches == 1)


def batch_key(cfg: TrainConfig) -> tuple:
    """Runs with equal keys can train in one batch: equal data, batches, shapes and optimiser."""
    width = cfg.width if cfg.depth > 1 else 0  # a 1-layer network has no hidden width
    return (cfg.dataset, cfg.augment, cfg.batch_size, cfg.model, cfg.depth, width, cfg.optimizer, cfg.epochs,
            cfg.max_steps)


def auto_replicas(cfg: TrainConfig, device: torch.device) -> int:
    """How many replicas ``--replicas auto`` puts in a batch: 1 on a CPU, where stacking does not
    pay (docs/experiments.md); on a GPU as many as fit in half its free memory, at most AUTO_MAX."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    in_features = 3 * 64 * 64  # the largest input of the study's datasets: a safe overestimate
    dims = [in_features] + [cfg.width] * (cfg.depth - 1) + [200]
    params = sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))
    state_copies = 4 if cfg.optimizer != "sgd" else 3  # weights, gradients, optimiser state
    activations = cfg.batch_size * sum(dims) * 3  # forward values, their gradients, the stacked copies
    per_replica = 4 * (params * state_copies + activations)
    return int(max(1, min(AUTO_MAX, free // 2 // per_replica)))


def train_replicas(cfgs: list[TrainConfig], root=None, *, device: str = "auto", progress: bool = True,
                   stop_after_epochs: int | None = None, kernels: str = "auto", max_replicas: int | str | None = None,
                   allow_device_change: bool = False, trained: list | None = None) -> list[Path]:
    """Train every config (finished ones are skipped), compatible ones in batches; return their
    run directories in the order given.

    ``max_replicas``: replicas per batch at most (None: all compatible runs in one batch;
    ``"auto"``: ``auto_replicas``, which is 1 on a CPU: every run trained alone). ``kernels``:
    ``stacked.KERNELS`` (auto: bitwise per-replica kernels on the CPU, batched on a GPU).
    ``trained`` (a list) receives the names of the runs this call trained itself.
    """
    if max_replicas not in (None, "auto") and (isinstance(max_replicas, bool) or not isinstance(max_replicas, int)
                                                or max_replicas < 1):
        raise UserError(f"max_replicas={max_replicas!r}: expected a positive integer, 'auto' or None")
    paths.check_layout(root)
    dev = resolve_device(device)
    kernels = resolve_kernels(kernels, dev)
    runs = [paths.run_dir(cfg.run_name(), root) for cfg in cfgs]
    pending = list({cfg.run_name(): cfg for cfg in cfgs if not (paths.run_dir(cfg.run_name(), root) / paths.DONE)
                    .exists()}.values())
    groups: dict[tuple, list[TrainConfig]] = {}
    alone = []
    for cfg in pending:
        (groups.setdefault(batch_key(cfg), []) if stackable(cfg) else alone).append(cfg)
    options = dict(progress=progress, stop_after_epochs=stop_after_epochs, allow_device_change=allow_device_change)
    for members in groups.values():
        cap = auto_replicas(members[0], dev) if max_replicas == "auto" else max_replicas or len(members)
        if cap == 1:
            alone += members
            continue
        for start in range(0, len(members), cap):
            _train_batch(members[start:start + cap], root, dev, kernels, options, trained)
    for cfg in alone:
        _train_alone(cfg, root, device, options, trained)
    return runs


def _train_alone(cfg: TrainConfig, root, device, options: dict, trained: list | None) -> None:
    run = paths.run_dir(cfg.run_name(), root)
    with try_lock(paths.lock_path(run)) as free:
        mine = free and not (run / paths.DONE).exists()
    train(cfg, root, device=device, **options)
    if trained is not None and mine and (run / paths.DONE).exists():
        trained.append(run.name)


def _train_batch(cfgs: list[TrainConfig], root, device: torch.device, kernels: str, options: dict,
                 trained: list | None) -> None:
    task = task_for(cfgs[0], root, device)  # the data must exist before anything is written
    busy = []
    with contextlib.ExitStack() as held:
        mine = []
        for cfg in sorted(cfgs, key=TrainConfig.run_name):
            run = paths.run_dir(cfg.run_name(), root)
            if not held.enter_context(try_lock(paths.lock_path(run))):
                busy.append(cfg)  # another worker trains it: wait for it below, never beside it
            elif not (run / paths.DONE).exists():
                mine.append(cfg)
        mine.sort(key=cfgs.index)
        if mine:
            _train_locked(mine, task, root, device, kernels, options)
            if trained is not None:
                trained += [c.run_name() for c in mine if (paths.run_dir(c.run_name(), root) / paths.DONE).exists()]
    for cfg in busy:
        train(cfg, root, device=device.type, **options)


def _resume_points(runs: list[Path]) -> list[dict | None] | None:
    """Each replica's checkpoint of the newest epoch for which every replica has a good one;
    [None, ...] when none has any; None when they have checkpoints but no good common epoch."""
    found = [{int(p.stem.split("_")[1]): p for p in checkpoints.epoch_checkpoints(run)} for run in runs]
    if not any(found):
        return [None] * len(runs)
    for epoch in sorted(set.intersection(*(set(f) for f in found)), reverse=True):
        try:
            return [checkpoints.load(f[epoch]) for f in found]
        except checkpoints.DamagedCheckpoint as exc:
            rundir.warn(f"skipping a damaged checkpoint: {exc}; its batch resumes from an earlier common epoch")
    return None


def _by_resume_epoch(cfgs: list[TrainConfig], runs: list[Path]) -> dict[int, list[TrainConfig]]:
    """The configs grouped by the epoch of their newest good checkpoint (0: none)."""
    groups: dict[int, list[TrainConfig]] = {}
    for cfg, run in zip(cfgs, runs):
        ckpt = checkpoints.latest_good(run, rundir.warn)
        groups.setdefault(ckpt["epoch"] if ckpt else 0, []).append(cfg)
    return groups


def _train_locked(cfgs: list[TrainConfig], task, root, device: torch.device, kernels: str, options: dict) -> None:
    """Train a batch whose runs' locks the caller holds."""
    runs = [rundir.prepare(cfg, root) for cfg in cfgs]
    for run in runs:
        rundir.remove_stale_tmp(run)
    resume = _resume_points(runs)
    if resume is None:  # e.g. a run trained alone before, beside fresh ones: one batch per start
        groups = _by_resume_epoch(cfgs, runs)
        if len(groups) > 1:
            for group in groups.values():
                _train_locked(group, task, root, device, kernels, options)
            return
        resume = [checkpoints.latest_good(run, rundir.warn) for run in runs]  # only damaged ones, or none
    set_deterministic()
    r_count, spe = len(cfgs), task.steps_per_epoch
    total_steps = cfgs[0].max_steps or cfgs[0].epochs * spe
    net = StackedNet([build_model(cfg, **task.model_args) for cfg in cfgs], cfgs[0].model,
                     [cfg.slope if cfg.model == "mlp" else None for cfg in cfgs], device, kernels)
    optimizers = [build_optimizer(cfg, model) for cfg, model in zip(cfgs, net.replicas)]
    states = [TrainState(model, opt) for model, opt in zip(net.replicas, optimizers)]
    replica_hooks = [hooks_for(cfg, model, total_steps, root) for cfg, model in zip(cfgs, net.replicas)]
    for run, state, hooks, ckpt in zip(runs, states, replica_hooks, resume):
        if ckpt is not None:
            check_device(run, ckpt, device, options["allow_device_change"])
            check_numerics(run, ckpt)
            checkpoints.restore(state, ckpt, hooks, spe)
    del resume
    start = states[0].epoch
    _write_provenance(cfgs, runs, task, device, kernels, start)

    shared = SharedEvaluation(net, task) if kernels == "batched" else None
    for r, (cfg, run, hooks) in enumerate(zip(cfgs, runs, replica_hooks)):
        rundir.keep_metrics_through(run, start)
        own = [LearningRate(schedule_for(cfg, spe, total_steps)), *hooks]
        own.append(ReplicaEpochLog(run, cfg, task, total_steps, list(own), r, r_count, shared))
        hooks[:] = own + [Checkpointer(run, cfg, device, own)]
    batch_task = ReplicaTask(cfgs, task, device, batched=kernels == "batched")
    batch = TrainState(net, ReplicaOptimizers(net, optimizers), epoch=start, step=states[0].step)
    hooks = [PerReplica([r.name for r in runs], states, replica_hooks, batch_task, rundir.warn),
             ProgressBar(f"{runs[0].name} +{r_count - 1}", cfgs[0].epochs, start, options["progress"])]
    if options["stop_after_epochs"] is not None:
        hooks.append(StopAfterEpochs(options["stop_after_epochs"]))
    try:
        run_loop(batch, batch_task, lambda step: None, hooks, total_steps)
    finally:
        for hook in hooks:
            hook.close()
    if batch.step >= total_steps:
        for cfg, run, state, own in zip(cfgs, runs, states, replica_hooks):
            state.epoch, state.step = batch.epoch, batch.step
            for hook in own:
                hook.finish(state, run)
            write_final(run, cfg, state)


def _write_provenance(cfgs, runs, task, device: torch.device, kernels: str, start_epoch: int) -> None:
    """provenance.json (noting the batch) and loader_digest.json (``replica_digest``, which
    equals ``lmc loader digest`` of each replica) of every replica that lacks them."""
    from lmc.provenance import provenance
    from pipelines import replica_digest

    names = [run.name for run in runs]
    for r, run in enumerate(runs):
        batch = {"replicas": len(runs), "index": r, "runs": names, "kernels": kernels, "from_epoch": start_epoch}
        path = run / paths.PROVENANCE
        if path.exists():  # begun elsewhere (alone, or in another batch): add this batch
            prov = json.loads(path.read_text())
            prov.setdefault("batches", []).append(batch)
        else:
            prov = provenance(**describe(device), **task.describe_data(), numerics=numerics.profile(),
                              torch_threads=torch.get_num_threads(), batches=[batch])
        prov["trained_in"] = f"a batch of {len(runs)}"
        save_json(prov, path)
    lacking = [r for r, run in enumerate(runs) if not (run / paths.DIGEST).exists()]
    if lacking:
        cfg = cfgs[0]
        noise = [(cfgs[r].order_seed, cfgs[r].aug_seed) for r in lacking]
        digests = replica_digest(task.betons["train"], replicas=noise,
                                 augment=cfg.augment, epochs=min(2, cfg.epochs), batch_size=cfg.batch_size,
                                 device=device)
        for r, digest in zip(lacking, digests):
            save_json({"epochs": digest}, runs[r] / paths.DIGEST)
