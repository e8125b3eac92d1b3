"""Hooks: behaviour that joins the loop at fixed points without another branch in it.

The loop calls, in this order, for every step: ``before_step`` (may end the loop before the
step), the task's forward/backward, ``after_backward`` (gradients are there: clip or mask
them), ``optimizer.step()``, ``after_step`` (weights are updated, ``state.step`` counts the step
just taken: re-apply a mask, update PLATON's scores, save a spawn state); at the end of every
epoch ``end_of_epoch`` (log, evaluate, checkpoint, request a stop), or ``end_of_budget`` when a
step budget ends inside one. A finished run calls ``finish`` before it writes ``final.pt``. A hook that holds state across steps returns it from
``state_dict`` under its ``name``, and checkpoints carry it, so a resumed run continues it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TrainState:
    """What the loop advances: the model, its optimiser, and where it stands."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0          # epochs completed
    step: int = 0           # optimiser steps taken
    stop: bool = False      # a hook asks the loop to end after the current epoch
    last_row: dict = field(default_factory=dict)


class Hook:
    name = "hook"

    def before_step(self, state: TrainState) -> bool:
        """Return True to end the loop before this step (the state is kept as it is)."""
        return False

    def after_backward(self, state: TrainState) -> None:
        pass

    def after_step(self, state: TrainState) -> None:
        pass

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        pass

    def end_of_budget(self, state: TrainState, running: dict) -> None:
        """The step budget ran out inside an epoch (a ``max_steps`` run ends with a partial epoch)."""

    def log_fields(self, state: TrainState) -> dict:
        """Extra columns for the epoch's metrics row (e.g. the pruned density)."""
        return {}

    def finish(self, state: TrainState, run) -> None:
        """The run is complete: write what it leaves beside final.pt (e.g. a final mask)."""

    def close(self) -> None:
        pass

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


class GradClip(Hook):
    """Clip the global gradient norm (the paper's Appendix C: clipping can preserve LMC)."""
    name = "grad_clip"

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def after_backward(self, state: TrainState) -> None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.max_norm)


class StopAfterEpochs(Hook):
    """End this call after ``epochs`` more epochs: a clean interruption (tests, time-sliced clusters)."""
    name = "stop_after_epochs"

    def __init__(self, epochs: int):
        self.remaining = epochs

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            state.stop = True


class ProgressBar(Hook):
    """One bar per run, one tick per epoch: readable both in a terminal and in a CI log."""
    name = "progress"

    def __init__(self, desc: str, total: int, initial: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=not enabled,
                        dynamic_ncols=True)

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        self.bar.update(1)
        row = state.last_row
        if "train_loss_running" in row and "test_acc" in row:
            self.bar.set_postfix(loss=f"{row['train_loss_running']:.3f}", test_acc=f"{row['test_acc']:.3f}")

    def close(self) -> None:
        self.bar.close()

