"""Spawning (Frankle et al.'s instability analysis): a parent trained under its own noise for
k steps hands its state to children that continue under theirs.

The parent of a child config is ``cfg.parent()``: the same settings with the parent seeds as
its noise. Its run directory holds ``checkpoints/step_NNNNNNN.pt``, one per spawn step that a
child asked for. :func:`train_parent` trains the parent once for a whole list of spawn steps,
saving its state at each on the way (``lmc emergence`` asks for many), and continues from the
furthest spawn state already saved, so no step is trained twice.
"""
from __future__ import annotations

import torch

from experiments.config import TrainConfig
from experiments.training import checkpoints, rundir
from experiments.training.builders import build_optimizer, hooks_for, initial_model
from experiments.training.device import resolve_device, set_deterministic
from experiments.training.hooks import Hook, TrainState
from experiments.training.loop import run_loop
from experiments.training.schedules import schedule_for
from experiments.training.tasks import task_for
from lmc import paths
from lmc.errors import UserError
from lmc.io import exclusive_lock


class SaveAtSteps(Hook):
    """Save the whole training state right after each of ``steps`` is taken."""
    name = "save_at_steps"

    def __init__(self, run, cfg: TrainConfig, device: torch.device, steps, hooks: list[Hook]):
        self.run, self.cfg, self.device, self.steps, self.hooks = run, cfg, device, set(steps), hooks

    def after_step(self, state: TrainState) -> None:
        if state.step in self.steps:
            hooks = {h.name: s for h in self.hooks if (s := h.state_dict()) is not None}
            checkpoints.save(paths.spawn_checkpoint_path(self.run, state.step), checkpoints.training_state(
                self.cfg.to_dict(), state.model, state.optimizer, state.epoch, state.step, self.device, hooks))


def _good_spawn(run, step: int) -> dict | None:
    try:
        return checkpoints.load(paths.spawn_checkpoint_path(run, step))
    except checkpoints.DamagedCheckpoint:
        return None


def train_parent(parent: TrainConfig, spawn_steps, root=None, *, device="auto") -> dict[int, object]:
    """The parent's state after each of ``spawn_steps`` (> 0) steps, as spawn checkpoint paths."""
    if parent.spawn_step:
        raise UserError(f"a parent trains from its initialisation; got spawn_step={parent.spawn_step}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    steps = sorted({int(k) for k in spawn_steps if int(k) > 0})
    task = task_for(parent, root, dev)
    total = parent.max_steps or parent.epochs * task.steps_per_epoch
    if steps and steps[-1] > total:
        raise UserError(f"spawn step {steps[-1]} is beyond the run's {total} steps ({parent.epochs} epochs of "
                        f"{task.steps_per_epoch}); choose spawn steps of at most {total}")
    run = paths.run_dir(parent.run_name(), root)
    with exclusive_lock(paths.lock_path(run)):
        missing = [k for k in steps if _good_spawn(run, k) is None]
        if missing:
            rundir.prepare(parent, root)
            rundir.remove_stale_tmp(run)
            set_deterministic()
            model = initial_model(parent, task, root)[0].to(dev)
            state = TrainState(model, build_optimizer(parent, model))
            hooks = hooks_for(parent, model, total, root)
            # Continue from the furthest saved state before the first missing step.
            start = max((k for k in steps if k < missing[0]), default=0)
            if start:
                checkpoints.restore(state, _good_spawn(run, start), hooks, task.steps_per_epoch)
            hooks.append(SaveAtSteps(run, parent, dev, missing, list(hooks)))
            run_loop(state, task, schedule_for(parent, task.steps_per_epoch, total), hooks, missing[-1])
    return {k: paths.spawn_checkpoint_path(run, k) for k in steps}


def spawn_state(child: TrainConfig, root=None, *, device="auto") -> dict:
    """The parent's state after ``child.spawn_step`` steps (trained once, shared by every child
    that names the same parent)."""
    path = train_parent(child.parent(), [child.spawn_step], root, device=device)[child.spawn_step]
    return checkpoints.load(path)
