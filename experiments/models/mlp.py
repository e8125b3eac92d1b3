"""L-layer MLP with Leaky-ReLU of negative slope p (p = 0 is ReLU; p = 1 would be linear).

The paper's minimal model is the L = 2 case (one hidden layer, ReLU). The slope sweep of
Figure 1 turns a linear network into a ReLU network gradually; keep ``linear`` as its own
family for the p = 1 end (same parameter names, see :mod:`experiments.models.linear`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import image_shape, positive_int, slope_in_unit_interval
from .linear import layer_sizes


@dataclass(frozen=True)
class MLPConfig:
    input_shape: tuple[int, int, int]  # (C, H, W); the image is flattened
    num_classes: int
    depth: int = 2  # number of weight layers L >= 2 (L - 1 hidden layers)
    width: int = 512  # width of every hidden layer
    slope: float = 0.0  # Leaky-ReLU negative slope p in [0, 1]

    def __post_init__(self):
        object.__setattr__(self, "input_shape", image_shape(self.input_shape))
        positive_int(self.num_classes, "num_classes", minimum=2)
        positive_int(self.depth, "depth", minimum=2,
                     hint=" for 'mlp' (weight layers; use model 'linear' with depth=1 for logistic regression)")
        positive_int(self.width, "width")
        object.__setattr__(self, "slope", slope_in_unit_interval(self.slope))


class MLP(nn.Module):
    """``layers[i]`` are ``nn.Linear``; the activation sits between them, never after the last."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        in_features = math.prod(config.input_shape)
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in layer_sizes(in_features, config.num_classes,
                                                    config.depth, config.width))
        # Parameter-free, so a state_dict holds only the Linear layers.
        self.activation = nn.ReLU() if config.slope == 0.0 else nn.LeakyReLU(config.slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)
