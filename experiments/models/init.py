"""Initialisation schemes other than PyTorch's defaults (the paper does not state its own).

``kaiming_normal``: every weight matrix or kernel drawn from N(0, 2 / fan_in) (He et al., the
ReLU gain) and every bias zero, layer by layer in module order. Its standard deviation is
about 2.4x that of PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for linear layers.
It is one of the hypotheses of the fidelity ablation (docs/reproduce.md).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .toeplitz import LocallyConnected2d

INIT_SCHEMES = ("torch", "kaiming_normal")
# Layers whose parameters are exactly one weight (fan-in along all but the first axis, or
# the LC layer's own) and one optional bias; a model holding any other parameter is refused.
_LAYERS = (nn.Linear, nn.Conv2d, LocallyConnected2d)


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, LocallyConnected2d):
        return math.prod(module.weight.shape[3:])
    return math.prod(module.weight.shape[1:])


@torch.no_grad()
def apply_init(model: nn.Module, scheme: str) -> nn.Module:
    """Re-draw ``model``'s parameters under ``scheme`` from torch's global RNG (the caller seeds it)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init_scheme {scheme!r}; valid: {', '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return model
    covered = set()
    for module in model.modules():
        if isinstance(module, _LAYERS):
            std = math.sqrt(2.0 / _fan_in(module))
            module.weight.normal_(0.0, std)
            covered.add(id(module.weight))
            if module.bias is not None:
                module.bias.zero_()
                covered.add(id(module.bias))
    other = [name for name, p in model.named_parameters() if id(p) not in covered]
    if other:
        raise ValueError(f"init_scheme={scheme!r} covers linear, convolutional and locally connected layers; "
                         f"this model also has {other[0]!r}: use init_scheme='torch' for it")
    return model
