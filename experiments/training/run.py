"""One run: from its config to a finished run directory, resuming whatever was left.

The run directory (``lmc.paths.run_dir(cfg.run_name())``) holds, written in this order:
``config.json`` (first), ``provenance.json``, ``loader_digest.json``, ``metrics.jsonl`` (one
row per epoch), ``checkpoints/epoch_NNNN.pt`` (the two newest, checksummed), ``final.pt`` and
``DONE``. A finished run is skipped; an unfinished one resumes from its newest good checkpoint
and ends with the same weights, bit for bit, as an uninterrupted run on the same device: the
loader's epoch e is a pure function of the seeds and e, and a checkpoint carries the model,
the optimiser, the hooks' state, the step and every RNG state.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from experiments.config import TrainConfig
from experiments.training import checkpoints, rundir
from experiments.training.builders import build_model, build_optimizer, hooks_for
from experiments.training.device import describe, resolve_device, set_deterministic
from experiments.training.hooks import Hook, ProgressBar, StopAfterEpochs, TrainState
from experiments.training.loop import run_loop
from experiments.training.schedules import schedule_for
from experiments.training.spawn import spawn_state
from experiments.training.tasks import task_for
from lmc import numerics, paths
from lmc.config import save_json
from lmc.errors import UserError
from lmc.io import append_jsonl, exclusive_lock


class DeviceChangeError(UserError):
    """Resuming a run on another kind of device than its checkpoint's changes its arithmetic."""


class EpochLog(Hook):
    """One metrics row per epoch: the running train metrics, the clean test split, and the
    clean train split at the end of the run (or every ``eval_train_every`` epochs); a step
    budget that ends inside an epoch logs that partial epoch too."""
    name = "epoch_log"

    def __init__(self, run: Path, cfg: TrainConfig, task, total_steps: int, hooks: list[Hook]):
        self.run, self.cfg, self.task, self.total_steps, self.hooks = run, cfg, task, total_steps, hooks
        self.t0 = time.perf_counter()

    def evaluate(self, state: TrainState, split: str) -> dict:
        return self.task.evaluate(state.model, split)

    def elapsed(self) -> float:
        """The row's ``seconds``: wall time since the previous row (a replica batch logs its share)."""
        return time.perf_counter() - self.t0

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        self._log(state, running, state.epoch)

    def end_of_budget(self, state: TrainState, running: dict) -> None:
        self._log(state, running, state.epoch + 1)

    def _log(self, state: TrainState, running: dict, epoch: int) -> None:
        cfg = self.cfg
        # A diverged run (NaN loss) is a result too, the paper's "unstable" cells: it is logged as is.
        row = {"epoch": epoch, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
               **self.task.summarize(running)}
        test = self.evaluate(state, "test")
        row.update(test_loss=test["loss"], test_acc=test["accuracy"])
        if state.step >= self.total_steps or (cfg.eval_train_every and epoch % cfg.eval_train_every == 0):
            train = self.evaluate(state, "train")
            row.update(train_loss=train["loss"], train_acc=train["accuracy"])
        for hook in self.hooks:
            row.update(hook.log_fields(state))
        # The weights' digest: `lmc verify --epochs N` checks any epoch, not only the kept checkpoints.
        row[numerics.WEIGHTS_DIGEST_KEY] = numerics.state_digest(state.model.state_dict())
        row["seconds"] = self.elapsed()
        append_jsonl(self.run / paths.METRICS, row)
        state.last_row = row
        self.t0 = time.perf_counter()


class Checkpointer(Hook):
    """After the epoch's metrics row: the epoch's checkpoint, with every hook's state."""
    name = "checkpointer"

    def __init__(self, run: Path, cfg: TrainConfig, device: torch.device, hooks: list[Hook]):
        self.run, self.cfg, self.device, self.hooks = run, cfg, device, hooks

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        hooks = {h.name: s for h in self.hooks if (s := h.state_dict()) is not None}
        checkpoints.save_epoch(self.run, checkpoints.training_state(
            self.cfg.to_dict(), state.model, state.optimizer, state.epoch, state.step, self.device, hooks))


def train(cfg: TrainConfig, root=None, *, device: str = "auto", progress: bool = True,
          stop_after_epochs: int | None = None, allow_device_change: bool = False) -> Path:
    """Train ``cfg`` to completion (or resume it); return the run directory.

    ``stop_after_epochs`` ends this call after that many epochs (a clean interruption, for
    tests and time-sliced clusters). The run's .betons must exist (``lmc beton build``).
    """
    paths.check_layout(root)  # never add runs to a results root of another layout version
    run = paths.run_dir(cfg.run_name(), root)
    if (run / paths.DONE).exists():
        return run
    dev = resolve_device(device)
    task = task_for(cfg, root, dev)  # the data must exist before anything is written
    total_steps = cfg.max_steps or cfg.epochs * task.steps_per_epoch
    if cfg.spawn_step > total_steps:
        raise UserError(f"spawn_step={cfg.spawn_step} is beyond the run's {total_steps} steps ({cfg.epochs} epochs "
                        f"of {task.steps_per_epoch}); choose a smaller spawn_step")
    # One worker at a time per run directory: the others wait, then find it DONE.
    with exclusive_lock(paths.lock_path(run)):
        if not (run / paths.DONE).exists():
            _train_locked(cfg, task, root, dev, total_steps, progress=progress, stop_after_epochs=stop_after_epochs,
                          allow_device_change=allow_device_change)
    return run


def _train_locked(cfg: TrainConfig, task, root, device: torch.device, total_steps: int, *, progress: bool,
                  stop_after_epochs: int | None, allow_device_change: bool) -> None:
    from lmc.provenance import provenance

    run = paths.run_dir(cfg.run_name(), root)
    set_deterministic()
    model = build_model(cfg, **task.model_args)
    resume = checkpoints.latest_good(run, rundir.warn)
    init_report = {}
    if resume is None and cfg.spawn_step == 0 and cfg.init_from:
        from experiments.training.initial import load_initial

        init_report = load_initial(model, cfg, root)
    model.to(device)
    state = TrainState(model, build_optimizer(cfg, model))
    hooks = hooks_for(cfg, model, total_steps, root)
    # Only now, when the checkpoint has loaded and the hooks accepted the model (PLATON needs
    # prunable matrices), is the run directory written: refused input leaves none behind.
    rundir.prepare(cfg, root)
    rundir.remove_stale_tmp(run)
    if resume is not None:
        check_device(run, resume, device, allow_device_change)
        check_numerics(run, resume)
        checkpoints.restore(state, resume, hooks, task.steps_per_epoch)
    elif cfg.spawn_step > 0:
        checkpoints.restore(state, spawn_state(cfg, root, device=device), hooks, task.steps_per_epoch)
    rundir.keep_metrics_through(run, state.epoch)

    if not (run / paths.PROVENANCE).exists():
        extra = {"init_from": init_report} if init_report else {}
        save_json(provenance(**describe(device), **task.describe_data(), numerics=numerics.profile(),
                             torch_threads=torch.get_num_threads(), **extra), run / paths.PROVENANCE)
    if not (run / paths.DIGEST).exists():
        save_json({"epochs": task.loader_digest(min(2, cfg.epochs))}, run / paths.DIGEST)

    epochs = -(-total_steps // task.steps_per_epoch)
    hooks += [EpochLog(run, cfg, task, total_steps, list(hooks))]
    hooks += [Checkpointer(run, cfg, device, list(hooks)), ProgressBar(run.name, epochs, state.epoch, progress)]
    if stop_after_epochs is not None:
        hooks.append(StopAfterEpochs(stop_after_epochs))
    try:
        run_loop(state, task, schedule_for(cfg, task.steps_per_epoch, total_steps), hooks, total_steps)
    finally:
        for hook in hooks:
            hook.close()
    if state.step >= total_steps:
        for hook in hooks:
            hook.finish(state, run)
        write_final(run, cfg, state)


def write_final(run: Path, cfg: TrainConfig, state: TrainState) -> None:
    """``final.pt`` (the weights, their config, step and numerics profile), then ``DONE``."""
    final = {"config": cfg.to_dict(), "model": checkpoints.standalone(state.model.state_dict()),
             "epoch": state.epoch, "step": state.step, "numerics": numerics.profile()}
    checkpoints.save(run / paths.FINAL, final)
    (run / paths.DONE).write_text(f"finished epoch {state.epoch} step {state.step}\n")


def check_numerics(run: Path, ckpt: dict) -> None:
    """A run resumes under the numerics profile that wrote its checkpoint (``lmc.numerics``);
    a change allowed by LMC_NUMERICS_ALLOW_CHANGE=1 is recorded in provenance.json."""
    diffs = numerics.check_resume(ckpt.get("numerics"))
    if diffs:
        import json

        prov_path = run / paths.PROVENANCE
        prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
        prov.setdefault("numerics_changes", []).append({"epoch": ckpt["epoch"], "differences": diffs})
        save_json(prov, prov_path)


def check_device(run: Path, ckpt: dict, device: torch.device, allowed: bool) -> None:
    """Refuse to resume a checkpoint of another kind of device, unless allowed (then recorded)."""
    saved = ckpt.get("device", device.type)
    if saved == device.type:
        return
    if not allowed:
        raise DeviceChangeError(f"{run.name} was checkpointed on {saved} and would resume on {device.type}, which "
                                f"changes its arithmetic; rerun with --device {saved}, or pass "
                                f"--allow-device-change (recorded in provenance.json)")
    import json

    prov_path = run / paths.PROVENANCE
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    prov.setdefault("device_changes", []).append({"epoch": ckpt["epoch"], "from": saved, "to": device.type})
    save_json(prov, prov_path)
