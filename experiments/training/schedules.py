"""Learning-rate schedules: the learning rate of every step, as a pure function of the step.

A schedule is a function of the global step alone, so a run resumed at step s continues
exactly where it stopped. The paper's schedule is a linear warm-up followed by a constant
rate; seed 002's GPT runs use a warm-up followed by a cosine decay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up over ``warmup_steps``, then constant or cosine down to ``min_lr`` at
    ``total_steps``. ``warmup_steps`` may be fractional (warm-up given in epochs)."""
    lr: float
    warmup_steps: float
    total_steps: int
    kind: str = "constant"
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step + 1 < self.warmup_steps:
            # Step 0 already takes 1/warmup_steps of the rate, as the paper's warm-up did.
            return self.lr * ((step + 1) / self.warmup_steps)
        if self.kind == "constant":
            return self.lr
        start = math.ceil(self.warmup_steps)
        span = max(1, self.total_steps - 1 - start)
        progress = min(1.0, max(0.0, (step - start) / span))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


def schedule_for(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    warmup = cfg.warmup_steps or cfg.warmup_epochs * steps_per_epoch
    return Schedule(lr=cfg.lr, warmup_steps=warmup, total_steps=total_steps, kind=cfg.schedule, min_lr=cfg.min_lr)
