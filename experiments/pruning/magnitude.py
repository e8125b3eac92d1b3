"""One-shot global magnitude pruning: the baseline mask against which PLATON's is judged.

Keep the round(r·N) largest |θ| over the same pool of matrices PLATON prunes (``targets.py``),
with the same exact, position-tie-broken selection (``masks.select_global``). Applied to the
weights a run ends with, it answers "does PLATON's choice of weights matter, or would any
mask of that density do as well?".
"""
from __future__ import annotations

import torch
from torch import nn

from .masks import Mask, check_ratio, keep_count, select_global
from .targets import prunable_parameters


@torch.no_grad()
def magnitude_mask(model: nn.Module, ratio: float, names: tuple[str, ...] | None = None) -> Mask:
    """The mask keeping the largest-magnitude fraction ``ratio`` (in (0, 1]) of the prunable weights."""
    ratio = check_ratio(ratio)
    params = prunable_parameters(model, names)
    total = sum(p.numel() for p in params.values())
    return select_global({n: p.detach().abs() for n, p in params.items()}, keep_count(ratio, total))
