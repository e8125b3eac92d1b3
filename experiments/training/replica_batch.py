"""What ``run_loop`` sees when it trains a replica batch: a task, an optimiser and hooks for R runs.

The loop is the single-run loop, unchanged. ``ReplicaTask`` yields the R replicas' stacked
batches (``pipelines.make_replica_loader``: each replica's slice is bitwise its own loader's
batch) and computes each replica's loss; ``ReplicaOptimizers`` steps each replica's own
optimiser (the single run's, over views of the stack); ``PerReplica`` hands every hook call
to each replica's own hooks (learning rate, clipping, metrics rows, checkpoints) with a
``TrainState`` of its own, so a replica's run directory is written by the single-run code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from experiments.config import TrainConfig
from experiments.training.hooks import Hook, TrainState
from experiments.training.run import EpochLog
from experiments.training.stacked import StackedNet, evaluate_stacked


class ReplicaTask:
    """Image classification for R replicas of one dataset, augmentation and batch size."""

    def __init__(self, cfgs: list[TrainConfig], task, device: torch.device, batched: bool):
        from pipelines import make_replica_loader

        cfg = cfgs[0]
        self.task, self.batched, self.num_replicas = task, batched, len(cfgs)
        self.steps_per_epoch = task.steps_per_epoch
        self.loader = make_replica_loader(task.betons["train"], batch_size=cfg.batch_size, augment=cfg.augment,
                                          replicas=[(c.order_seed, c.aug_seed) for c in cfgs], device=device)
        if len(self.loader) != self.steps_per_epoch:
            raise RuntimeError("the replica loader and the single-run task disagree on the steps per epoch")

    def batches(self, epoch: int):
        for x, y, _ in self.loader.iter_epoch(epoch):
            yield x, y

    def new_running(self) -> dict:
        device, r_count = self.loader.device, self.num_replicas
        return {"loss_sum": torch.zeros(r_count, dtype=torch.float64, device=device),
                "correct": torch.zeros(r_count, dtype=torch.int64, device=device), "seen": 0}

    def forward_backward(self, net: StackedNet, batch, running: dict) -> None:
        x, y = batch
        logits = net(x)
        if self.batched:
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
            losses.sum().backward()  # each replica's gradient comes from its own loss alone
        else:
            # Each replica's loss as the single run computes it; unbind's backward stacks the
            # gradients without adding anything to them.
            alone = [F.cross_entropy(logits_r, y[r]) for r, logits_r in enumerate(logits.unbind(0))]
            torch.autograd.backward(alone)
            losses = torch.stack(alone)
        running["loss_sum"] += losses.detach().double() * y.shape[1]
        running["correct"] += (logits.detach().argmax(2) == y).sum(1)
        running["seen"] += y.shape[1]
        net.share_grads()

    def running_of(self, running: dict, r: int) -> dict:
        """Replica r's running metrics, in the single-run task's format."""
        return {"loss_sum": running["loss_sum"][r], "correct": running["correct"][r], "seen": running["seen"]}


class ReplicaOptimizers:
    """Each replica's own optimiser (``builders.build_optimizer`` over its module's views).

    ``run_loop`` sets one learning rate on ``param_groups``; a batch has one per replica, so it
    shows none there and each replica's ``LearningRate`` hook sets its own before the step.
    """
    param_groups: tuple = ()

    def __init__(self, net: StackedNet, optimizers: list[torch.optim.Optimizer]):
        self.net, self.optimizers = net, optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.net.zero_grad(set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


class LearningRate(Hook):
    """A replica's learning rate, from its own schedule, before each step."""
    name = "learning_rate"

    def __init__(self, schedule):
        self.schedule = schedule

    def before_step(self, state: TrainState) -> bool:
        lr = self.schedule(state.step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        return False


class SharedEvaluation:
    """Every replica's metrics on a split from one stacked pass per epoch (batched kernels)."""

    def __init__(self, net: StackedNet, task):
        self.net, self.task = net, task
        self.step, self.results, self.splits = None, {}, {}

    def get(self, r: int, split: str, step: int) -> dict:
        if step != self.step:
            self.step, self.results = step, {}
        if split not in self.results:
            if split not in self.splits:  # on the device once per batch, not once per epoch
                self.splits[split] = self.task.split(split)
            self.results[split] = evaluate_stacked(self.net, *self.splits[split], self.task.manifest)
        return self.results[split][r]


class ReplicaEpochLog(EpochLog):
    """A replica's metrics row, as a single run writes it. ``seconds`` is the replica's share
    of the batch's epoch, so that summing a sweep's rows gives the time it took."""

    def __init__(self, run, cfg: TrainConfig, task, total_steps: int, hooks: list, index: int, num_replicas: int,
                 shared: SharedEvaluation | None):
        super().__init__(run, cfg, task, total_steps, hooks)
        self.index, self.num_replicas, self.shared = index, num_replicas, shared

    def evaluate(self, state: TrainState, split: str) -> dict:
        if self.shared is None:  # per-replica kernels: the single run's evaluation, bit for bit
            return super().evaluate(state, split)
        return self.shared.get(self.index, split, state.step)

    def elapsed(self) -> float:
        return super().elapsed() / self.num_replicas


class PerReplica(Hook):
    """Every hook call of the batch, handed to each replica's hooks with its own state."""
    name = "per_replica"

    def __init__(self, names: list[str], states: list[TrainState], hooks: list[list[Hook]], task: ReplicaTask,
                 warn):
        self.names, self.states, self.hooks, self.task, self.warn = names, states, hooks, task, warn
        self.diverged: set[int] = set()

    def _each(self, batch: TrainState):
        for r, (state, hooks) in enumerate(zip(self.states, self.hooks)):
            state.epoch, state.step = batch.epoch, batch.step
            yield r, state, hooks

    def before_step(self, state: TrainState) -> bool:
        return any([hook.before_step(s) for _, s, hooks in self._each(state) for hook in hooks])

    def after_backward(self, state: TrainState) -> None:
        for _, s, hooks in self._each(state):
            for hook in hooks:
                hook.after_backward(s)

    def after_step(self, state: TrainState) -> None:
        for _, s, hooks in self._each(state):
            for hook in hooks:
                hook.after_step(s)

    def end_of_epoch(self, state: TrainState, running: dict) -> None:
        for r, s, hooks in self._each(state):
            mine = self.task.running_of(running, r)
            if r not in self.diverged and not math.isfinite(mine["loss_sum"].item()):
                # Logged as a single run logs it (NaN rows); its slice never reaches the others.
                self.diverged.add(r)
                self.warn(f"{self.names[r]} diverged (non-finite loss in epoch {state.epoch}); the other "
                          f"replicas of its batch are unaffected")
            for hook in hooks:
                hook.end_of_epoch(s, mine)
            state.stop = state.stop or s.stop

    def end_of_budget(self, state: TrainState, running: dict) -> None:
        for r, s, hooks in self._each(state):
            for hook in hooks:
                hook.end_of_budget(s, self.task.running_of(running, r))

    def close(self) -> None:
        for hooks in self.hooks:
            for hook in hooks:
                hook.close()
