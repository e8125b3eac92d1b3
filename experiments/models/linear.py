"""L-layer linear network (no activation); L = 1 is multinomial logistic regression.

"L-layer" counts weight layers: L = 1 is ``input -> classes``, L = 2 is
``input -> width -> classes``. The product of the layers is still a linear map, but the
training dynamics (and hence LMC, Table 1 of the paper) depend on L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import image_shape, positive_int


@dataclass(frozen=True)
class LinearConfig:
    input_shape: tuple[int, int, int]  # (C, H, W); the image is flattened to C*H*W features
    num_classes: int
    depth: int = 1  # number of weight layers L >= 1
    width: int = 512  # hidden width of the L-1 hidden layers (unused when L = 1)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", image_shape(self.input_shape))
        positive_int(self.num_classes, "num_classes", minimum=2)
        positive_int(self.depth, "depth", hint=" (number of weight layers; 1 = logistic regression)")
        positive_int(self.width, "width")


def layer_sizes(in_features: int, num_classes: int, depth: int, width: int) -> list[tuple[int, int]]:
    """(in, out) of each of the ``depth`` weight layers."""
    dims = [in_features] + [width] * (depth - 1) + [num_classes]
    return list(zip(dims[:-1], dims[1:]))


class LinearNet(nn.Module):
    """``layers[0] ... layers[L-1]``: plain ``nn.Linear`` (weights and biases), nothing between.

    The parameter names match :class:`experiments.models.mlp.MLP` of the same depth, so a
    linear network's state_dict loads into an MLP (slope 1 gives the same function).
    """

    def __init__(self, config: LinearConfig):
        super().__init__()
        self.config = config
        in_features = math.prod(config.input_shape)
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in layer_sizes(in_features, config.num_classes,
                                                    config.depth, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x
