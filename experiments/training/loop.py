"""The training loop: batches -> steps, until a step budget or a hook ends it. One exit.

Everything that varies lives outside: the task (batches, loss, running metrics), the
schedule (learning rate per step), the hooks (clipping, masks, logging, evaluation,
checkpoints, stops). A run, a parent phase trained to its spawn steps and a resumed run all
go through this one function with different hooks.
"""
from __future__ import annotations

import contextlib

from experiments.training.hooks import Hook, TrainState


def run_loop(state: TrainState, task, schedule, hooks: list[Hook], until_step: int) -> TrainState:
    """Advance ``state`` until ``until_step`` steps are taken or a hook ends the loop.

    Epoch e's batches are a pure function of the seeds and e, so a state in the middle of an
    epoch (a child spawned mid-epoch, a resumed run) re-enters it by skipping the batches
    already taken; ``end_of_epoch`` runs only for epochs that ran to their last batch.
    """
    steps_per_epoch = task.steps_per_epoch
    model, optimizer = state.model, state.optimizer
    model.train()
    running, finished_epoch = None, True
    while state.step < until_step and not state.stop:
        skip = state.step - state.epoch * steps_per_epoch
        running = task.new_running()
        finished_epoch = True
        with contextlib.closing(task.batches(state.epoch)) as batches:
            for i, batch in enumerate(batches):
                if i < skip:
                    continue
                if state.step >= until_step or any(hook.before_step(state) for hook in hooks):
                    finished_epoch = False
                    break
                lr = schedule(state.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                task.forward_backward(model, batch, running)
                for hook in hooks:
                    hook.after_backward(state)
                optimizer.step()
                state.step += 1
                for hook in hooks:
                    hook.after_step(state)
        if not finished_epoch:
            break
        state.epoch += 1
        for hook in hooks:
            hook.end_of_epoch(state, running)
    if not finished_epoch and state.step >= until_step:
        for hook in hooks:
            hook.end_of_budget(state, running)
    return state
