"""PLATON (Zhang et al., ICML 2022), as its reference ``Pruner.py`` runs it, with its faults mended.

Per prunable entry, after every ``optimizer.step()`` (weights θ already updated, gradient ∇L
of the step still there, as in the reference):

    I    = |θ ⊙ ∇L|, averaged over a window of ΔT steps
    Ī    ← β1·Ī + (1 − β1)·I              } once per window, at steps t with t mod ΔT = 0
    Ū    ← β2·Ū + (1 − β2)·|I − Ī|        } (Ū uses the freshly updated Ī)
    score = Ī·Ū

With ΔT = 1 this is the paper's per-step update. The remaining ratio follows the cubic
schedule (T total steps, t_i / t_f initial / final warm-up steps):

    r(t) = r0                                                  t <= t_i
    r(t) = rT + (r0 − rT)·(1 − (t − t_i)/(T − t_i − t_f))³      t_i < t <= T − t_f
    r(t) = rT                                                  t > T − t_f

and the mask is recomputed at t mod ΔT = 0 in the cubic phase and at every step of the final
phase, keeping the highest scores over one global pool (``targets.py``).

Mended, relative to the reference:

* the mask is persistent and only shrinks: pruned weights, their gradients (``after_backward``)
  and their optimiser state stay exactly zero; the reference zeroes weights at masking steps
  only, so they regrow in between and Adam's moments push them back;
* the count kept is exactly round(r·N), ties broken by position (``masks.select_global``); the
  reference's ``kthvalue`` threshold keeps every entry tied with it, and crashes (k = 0) at r = 1;
* a count to keep of 0 empties the mask instead of crashing;
* a frozen matrix is not a target, and a matrix without a gradient in a step is skipped;
* the window that closes at step t includes step t, and the first window averages only the
  steps it saw (the reference closes its window one step late and averages a zero into it);
* the last step T always masks, so r(T) = rT is reached even when ΔT does not divide T.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from experiments.training.hooks import Hook
from lmc.config import param

from .masks import Mask, PruningError, check_ratio, keep_count, select_global
from .targets import prunable_parameters


@dataclass(frozen=True)
class PlatonConfig:
    final_ratio: float = param(0.2, "remaining ratio rT at the end of training: the fraction of prunable "
                                    "weights kept (seed 001: 0.2 and 0.05)")
    initial_ratio: float = param(1.0, "remaining ratio r0 before the cubic schedule starts")
    beta1: float = param(0.85, "EMA factor of the importance |theta * grad| (Zhang et al.: 0.85)")
    beta2: float = param(0.95, "EMA factor of the uncertainty |I - mean I| (Zhang et al.: 0.95)")
    delta_t: int = param(10, "steps per importance window and between maskings (Zhang et al.: 10)")
    initial_warmup: float = param(0.1, "fraction of the training steps at r0 before pruning starts (t_i / T); "
                                       "not given by seed 001")
    final_warmup: float = param(0.25, "fraction of the training steps at rT at the end (t_f / T); seed 001 "
                                      "reaches its target by the end of epoch 3 of 4")

    def __post_init__(self):
        check_ratio(self.final_ratio, "PLATON final_ratio (the remaining ratio rT)")
        check_ratio(self.initial_ratio, "PLATON initial_ratio (the remaining ratio r0)")
        if self.final_ratio > self.initial_ratio:
            raise PruningError(f"PLATON final_ratio={self.final_ratio} exceeds initial_ratio={self.initial_ratio}: "
                               "the schedule only removes weights; use final_ratio <= initial_ratio")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise PruningError(f"PLATON {name} must lie in [0, 1), got {value!r}")
        if isinstance(self.delta_t, bool) or not isinstance(self.delta_t, int) or self.delta_t < 1:
            raise PruningError(f"PLATON delta_t must be an integer >= 1 (steps), got {self.delta_t!r}")
        for name in ("initial_warmup", "final_warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise PruningError(f"PLATON {name} is a fraction of the training steps in [0, 1), got {value!r}")
        if self.initial_warmup + self.final_warmup >= 1.0:
            raise PruningError(f"PLATON initial_warmup + final_warmup = {self.initial_warmup + self.final_warmup:g} "
                               "leaves no steps to prune in; make their sum < 1")


def remaining_ratio(step: int, total_steps: int, initial_warmup_steps: int, final_warmup_steps: int,
                    initial_ratio: float, final_ratio: float) -> float:
    """The cubic schedule r(t) of the module docstring (the reference's ``schedule_threshold_comb``)."""
    if step <= initial_warmup_steps:
        return initial_ratio
    if step > total_steps - final_warmup_steps:
        return final_ratio
    progress = (step - initial_warmup_steps) / (total_steps - initial_warmup_steps - final_warmup_steps)
    return final_ratio + (initial_ratio - final_ratio) * (1.0 - progress) ** 3


class Platon(Hook):
    """The PLATON training hook (see ``experiments/pruning/__init__.py`` for the protocol)."""
    name = "platon"

    def __init__(self, model: nn.Module, config: PlatonConfig, total_steps: int,
                 names: tuple[str, ...] | None = None):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise PruningError(f"PLATON needs the run's total number of optimiser steps (>= 1), got {total_steps!r}")
        self.config, self.total_steps = config, total_steps
        self.initial_warmup_steps = round(config.initial_warmup * total_steps)
        self.final_warmup_steps = round(config.final_warmup * total_steps)
        if total_steps - self.initial_warmup_steps - self.final_warmup_steps < 1:
            raise PruningError(f"PLATON's warm-ups ({self.initial_warmup_steps} + {self.final_warmup_steps} steps) "
                               f"fill all {total_steps} training steps; train longer or shorten the warm-ups")
        params = prunable_parameters(model, names)
        self.names = tuple(params)
        self.mask = Mask.dense(params)
        zeros = {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in params.items()}
        self.exp_avg_ipt = {n: z.clone() for n, z in zeros.items()}
        self.exp_avg_unc = {n: z.clone() for n, z in zeros.items()}
        self.window_sum = zeros
        self.window_count = {n: 0 for n in params}

    # --- the schedule -------------------------------------------------------------------------

    def remaining_ratio(self, step: int) -> float:
        return remaining_ratio(step, self.total_steps, self.initial_warmup_steps, self.final_warmup_steps,
                               self.config.initial_ratio, self.config.final_ratio)

    def is_mask_step(self, step: int) -> bool:
        if step <= self.initial_warmup_steps:
            return False
        if step > self.total_steps - self.final_warmup_steps or step >= self.total_steps:
            return True
        return step % self.config.delta_t == 0

    # --- scores and masking -------------------------------------------------------------------

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: self.exp_avg_ipt[n] * self.exp_avg_unc[n] for n in self.names}

    @torch.no_grad()
    def observe(self, model: nn.Module, step: int) -> None:
        """Add this step's |θ ⊙ ∇L| to the window; close the window at t mod ΔT = 0."""
        params = dict(model.named_parameters())
        for n in self.names:
            p = params[n]
            if p.grad is None:  # unused this step (or frozen since): no evidence, no update
                continue
            self.window_sum[n].add_((p * p.grad).abs())
            self.window_count[n] += 1
        if step % self.config.delta_t:
            return
        b1, b2 = self.config.beta1, self.config.beta2
        for n in self.names:
            if self.window_count[n] == 0:
                continue
            ipt = self.window_sum[n] / self.window_count[n]
            self.exp_avg_ipt[n].mul_(b1).add_(ipt, alpha=1 - b1)
            self.exp_avg_unc[n].mul_(b2).add_((ipt - self.exp_avg_ipt[n]).abs_(), alpha=1 - b2)
            self.window_sum[n].zero_()
            self.window_count[n] = 0

    @torch.no_grad()
    def prune(self, step: int) -> bool:
        """Shrink the mask to round(r(step)·N) entries; False when nothing had to go."""
        target = keep_count(self.remaining_ratio(step), self.mask.num_total)
        if target >= self.mask.num_kept:
            return False  # a mask never grows back
        self.mask = select_global(self.scores(), target, alive=self.mask)
        return True

    # --- the hook protocol --------------------------------------------------------------------

    def after_backward(self, state) -> None:
        if self.mask.num_kept < self.mask.num_total:
            self.mask.apply_to_gradients(state.model)

    def after_step(self, state) -> None:
        """``state.step`` counts the optimiser steps taken, the one just made included (1 first)."""
        self.observe(state.model, state.step)
        if self.is_mask_step(state.step):
            self.prune(state.step)
        if self.mask.num_kept < self.mask.num_total:
            self.mask.apply_to_weights(state.model)
            self.mask.apply_to_optimizer(state.model, state.optimizer)

    def log_fields(self, state) -> dict:
        return self.metrics(state.step)

    def finish(self, state, run) -> None:
        """The final mask beside final.pt, for masked retraining (``prune=mask``, ``mask_from``)."""
        from experiments.training import checkpoints
        from lmc import paths

        checkpoints.save(run / paths.MASK, self.mask.state_dict())

    def metrics(self, step: int) -> dict:
        """For the run's metrics.jsonl: the scheduled ratio and the density actually reached."""
        return {"remaining_ratio": self.remaining_ratio(step), "density": self.mask.density}

    def _identity(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "total_steps": self.total_steps, "names": list(self.names)}

    def state_dict(self) -> dict:
        def clone(d):
            return {n: t.detach().clone() for n, t in d.items()}

        return {**self._identity(), "mask": self.mask.state_dict(), "exp_avg_ipt": clone(self.exp_avg_ipt),
                "exp_avg_unc": clone(self.exp_avg_unc), "window_sum": clone(self.window_sum),
                "window_count": dict(self.window_count)}

    def load_state_dict(self, state: dict) -> None:
        ours = self._identity()
        for key, value in ours.items():
            if state.get(key) != value:
                raise PruningError(f"saved PLATON state has {key}={state.get(key)!r}, this run {value!r}; "
                                   "resume with the same pruning config and model")
        self.mask.load_state_dict(state["mask"])
        with torch.no_grad():
            for key in ("exp_avg_ipt", "exp_avg_unc", "window_sum"):
                for n, tensor in getattr(self, key).items():
                    tensor.copy_(state[key][n])
        self.window_count = {n: int(state["window_count"][n]) for n in self.names}
