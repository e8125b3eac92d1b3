"""Masks: which entries of the prunable matrices are kept, and how a mask is enforced.

A ``Mask`` maps parameter names to bool tensors (True = kept). Enforcing it means three
things, because any one alone lets pruned weights come back:

* weights: pruned entries set to exactly +0.0;
* gradients: zeroed after ``loss.backward()``, so the optimiser sees no signal there;
* optimiser state: every per-parameter tensor shaped like its parameter (Adam/AdamW
  ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; SGD ``momentum_buffer``) zeroed, so stale
  momentum cannot move a pruned weight. With zero gradient and zero state, SGD (with momentum,
  Nesterov, weight decay), Adam and AdamW all leave a zero weight at zero.

``select_global`` picks the entries to keep over all matrices at once: exactly ``num_keep``
of them, the highest scores, ties broken by position (parameter order, then flat index) with
a stable sort, so the count is exact and the choice the same on every device.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from experiments.training.hooks import Hook
from lmc.errors import UserError


class PruningError(UserError):
    """Bad pruning input: a ratio outside (0, 1], nothing to prune, a mask that does not fit."""


def check_ratio(value, name: str = "remaining ratio") -> float:
    """A remaining ratio (fraction of weights kept) in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise PruningError(f"{name} must lie in (0, 1] (the fraction of weights kept, e.g. 0.2 keeps 20%), "
                           f"got {value!r}")
    return float(value)


def keep_count(ratio: float, total: int) -> int:
    """How many of ``total`` entries a remaining ratio keeps: the nearest integer (halves up).

    It may be 0 for a tiny ratio on a small model; that is a valid (empty) mask, not an error.
    """
    return min(total, int(math.floor(ratio * total + 0.5)))


class Mask:
    def __init__(self, keep: dict[str, torch.Tensor]):
        for name, tensor in keep.items():
            if tensor.dtype != torch.bool:
                raise PruningError(f"mask entry {name!r} must be a bool tensor, got {tensor.dtype}")
        self.keep = dict(keep)
        self._pruned = {n: ~k for n, k in self.keep.items()}
        self._num_kept: int | None = None  # cached: the hooks ask every step

    @classmethod
    def dense(cls, params: dict[str, torch.Tensor]) -> "Mask":
        """Keep everything (the start of PLATON)."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.keep)

    @property
    def num_total(self) -> int:
        return sum(k.numel() for k in self.keep.values())

    @property
    def num_kept(self) -> int:
        if self._num_kept is None:
            self._num_kept = int(sum(int(k.sum()) for k in self.keep.values()))
        return self._num_kept

    @property
    def density(self) -> float:
        """Fraction of the prunable entries kept (1 - sparsity)."""
        return self.num_kept / self.num_total

    def densities(self) -> dict[str, float]:
        return {n: float(k.float().mean()) for n, k in self.keep.items()}

    def flat(self) -> torch.Tensor:
        return torch.cat([k.reshape(-1) for k in self.keep.values()])

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [n for n in self.keep if n not in params]
        if missing:
            raise PruningError(f"the mask names {missing[0]!r}, which {type(model).__name__} does not have; "
                               "apply a mask to the architecture it was made for")
        chosen = {n: params[n] for n in self.keep}
        device = next(iter(chosen.values())).device if chosen else None
        if chosen and next(iter(self.keep.values())).device != device:
            # A mask read from a checkpoint lives on the CPU: follow the model once.
            self.keep = {n: k.to(device) for n, k in self.keep.items()}
            self._pruned = {n: k.to(device) for n, k in self._pruned.items()}
        return chosen

    @torch.no_grad()
    def apply_to_weights(self, model: nn.Module) -> None:
        for name, p in self._params(model).items():
            p.masked_fill_(self._pruned[name], 0.0)

    @torch.no_grad()
    def apply_to_gradients(self, model: nn.Module) -> None:
        for name, p in self._params(model).items():
            if p.grad is not None:
                p.grad.masked_fill_(self._pruned[name], 0.0)

    @torch.no_grad()
    def apply_to_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        for name, p in self._params(model).items():
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.masked_fill_(self._pruned[name], 0)

    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Weights, gradients and (given one) optimiser state."""
        self.apply_to_weights(model)
        self.apply_to_gradients(model)
        if optimizer is not None:
            self.apply_to_optimizer(model, optimizer)

    def to(self, device) -> "Mask":
        return Mask({n: k.to(device) for n, k in self.keep.items()})

    def state_dict(self) -> dict:
        return {"keep": {n: k.detach().cpu().clone() for n, k in self.keep.items()}}

    def load_state_dict(self, state: dict) -> None:
        keep = state["keep"]
        if list(keep) != list(self.keep):
            raise PruningError(f"saved mask covers {len(keep)} matrices ({', '.join(list(keep)[:3])}, ...), this "
                               f"one {len(self.keep)}; resume with the same model and pruning targets")
        for name, tensor in keep.items():
            if tensor.shape != self.keep[name].shape:
                raise PruningError(f"saved mask {name!r} has shape {tuple(tensor.shape)}, the parameter "
                                   f"{tuple(self.keep[name].shape)}; resume with the same model")
            self.keep[name].copy_(tensor)
            self._pruned[name].copy_(~self.keep[name])
        self._num_kept = None

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> "Mask":
        return cls({n: k.to(device=device, dtype=torch.bool) for n, k in state["keep"].items()})


def select_global(scores: dict[str, torch.Tensor], num_keep: int, alive: Mask | None = None) -> Mask:
    """Keep the ``num_keep`` highest scores over all matrices together (exactly that many, or
    every alive entry if fewer are alive). Entries pruned in ``alive`` stay pruned: a mask only
    shrinks. NaN scores rank lowest."""
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
    flat = flat.masked_fill(torch.isnan(flat), -math.inf)
    if alive is not None:
        if list(alive.names) != names:
            raise PruningError("scores and the alive mask cover different matrices; use one set of targets")
        flat = flat.masked_fill(~alive.flat(), -math.inf)
        num_keep = min(num_keep, alive.num_kept)
    # Stable descending sort: among equal scores the earlier entry wins, on every device.
    order = torch.sort(flat, descending=True, stable=True).indices[:num_keep]
    keep_flat = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device).index_fill_(0, order, True)
    keep, start = {}, 0
    for name in names:
        size = scores[name].numel()
        keep[name] = keep_flat[start:start + size].view(scores[name].shape).clone()
        start += size
    return Mask(keep)


class MaskHook(Hook):
    """Hold a fixed mask during training: the lottery-ticket retraining and the masked pairs.

    ``before_step`` masks the weights (so the first step already starts from the masked
    initial weights, and a resumed run too), ``after_backward`` the gradients, ``after_step``
    the weights and the optimiser state.
    """
    name = "mask"

    def __init__(self, mask: Mask):
        self.mask = mask

    def before_step(self, state) -> bool:
        self.mask.apply_to_weights(state.model)
        return False

    def after_backward(self, state) -> None:
        self.mask.apply_to_gradients(state.model)

    def after_step(self, state) -> None:
        self.mask.apply_to_weights(state.model)
        self.mask.apply_to_optimizer(state.model, state.optimizer)

    def log_fields(self, state) -> dict:
        return {"density": self.mask.density}

    def state_dict(self) -> dict:
        return {"mask": self.mask.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.mask.load_state_dict(state["mask"])
