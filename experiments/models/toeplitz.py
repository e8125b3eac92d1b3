"""Toeplitz-matched one-hidden-layer models (Appendix D, Table 3, Figure 2).

Three 2-layer networks whose hidden layer is the same kind of linear map, more or less
constrained; all use stride = kernel size k, no padding, ReLU, then a linear classifier on
the Co*H'*W' hidden features (flattened channel-major, as ``Conv2d(...).flatten(1)``):

* ``cnn``          Conv2d(Ci, Co, k, stride=k): locality + weight sharing,
                   Co*Ci*k*k weights + Co biases;
* ``lc_cnn``       locally connected: a different kernel per output position (locality only),
                   Co*H'*W'*Ci*k*k weights + Co*H'*W' biases;
* ``toeplitz_mlp`` Linear(Ci*H*W, Co*H'*W'): neither, Co*H'*W'*Ci*H*W weights + Co*H'*W' biases.

A CNN is an LC-CNN with tied kernels, and an LC-CNN is an MLP whose weight matrix is zero
outside the k x k patch of each hidden unit (a block-sparse, for k = stride, "Toeplitz"
matrix). :func:`lc_cnn_from_cnn`, :func:`toeplitz_mlp_from_lc_cnn` and
:func:`toeplitz_mlp_from_cnn` build those embeddings; the three then compute the same function.

Biases are counted (and needed): Table 3's MLP value 25.26 M is 25,255,946 with biases and
25.25 M without; CNN (88,202) and LC-CNN (483,338) round to 0.09 / 0.48 either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import image_shape, kernel_divides, positive_int


@dataclass(frozen=True)
class ToeplitzConfig:
    input_shape: tuple[int, int, int]  # (Ci, H, W)
    num_classes: int
    channels: int = 128  # Co, the number of filters; hidden width = Co*H'*W' (8192 on CIFAR-10)
    kernel: int = 4  # k = stride, no padding; must divide H and W

    def __post_init__(self):
        object.__setattr__(self, "input_shape", image_shape(self.input_shape))
        positive_int(self.num_classes, "num_classes", minimum=2)
        positive_int(self.channels, "channels", hint=" (number of filters Co)")
        positive_int(self.kernel, "kernel")
        kernel_divides(self.kernel, self.input_shape)

    @property
    def out_hw(self) -> tuple[int, int]:
        """(H', W') = (H/k, W/k)."""
        return self.input_shape[1] // self.kernel, self.input_shape[2] // self.kernel

    @property
    def hidden_features(self) -> int:
        return self.channels * math.prod(self.out_hw)


def _patches(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(N, Ci, H, W) -> (N, H'*W', Ci*k*k): the non-overlapping k x k patches (``F.unfold`` for
    stride = kernel), as a view + permute so its backward is a plain, deterministic copy."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // kernel, kernel, w // kernel, kernel)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // kernel) * (w // kernel), c * kernel * kernel)


class LocallyConnected2d(nn.Module):
    """Conv2d(Ci, Co, k, stride=k) without weight sharing: one kernel per output position.

    ``weight``: (Co, H', W', Ci, k, k), ``bias``: (Co, H', W'). Initialised like Conv2d's
    default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = Ci*k*k, weight then bias.
    """

    def __init__(self, in_channels: int, out_channels: int, out_hw: tuple[int, int], kernel: int):
        super().__init__()
        self.kernel = kernel
        h_out, w_out = out_hw
        self.weight = nn.Parameter(torch.empty(out_channels, h_out, w_out, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(out_channels, h_out, w_out))
        bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        co, h_out, w_out = self.bias.shape
        patches = _patches(x, self.kernel)  # (N, L, F)
        weight = self.weight.reshape(co, h_out * w_out, -1)  # (Co, L, F)
        out = torch.einsum("nlf,olf->nol", patches, weight) + self.bias.reshape(co, -1)
        return out.reshape(x.shape[0], co, h_out, w_out)


class _OneHiddenLayer(nn.Module):
    """``hidden`` -> ReLU -> flatten (channel-major) -> ``classifier``.

    Subclasses say how to build ``hidden``; it is built (and so draws from the RNG) first.
    """

    def __init__(self, config: ToeplitzConfig):
        super().__init__()
        self.config = config
        self.hidden = self.build_hidden(config)
        self.classifier = nn.Linear(config.hidden_features, config.num_classes)

    def build_hidden(self, config: ToeplitzConfig) -> nn.Module:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvNet(_OneHiddenLayer):
    def build_hidden(self, config: ToeplitzConfig) -> nn.Module:
        return nn.Conv2d(config.input_shape[0], config.channels, config.kernel, stride=config.kernel)


class LocallyConnectedNet(_OneHiddenLayer):
    def build_hidden(self, config: ToeplitzConfig) -> nn.Module:
        return LocallyConnected2d(config.input_shape[0], config.channels, config.out_hw, config.kernel)


class ToeplitzMLP(_OneHiddenLayer):
    def build_hidden(self, config: ToeplitzConfig) -> nn.Module:
        return nn.Linear(math.prod(config.input_shape), config.hidden_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.hidden(x.flatten(1)))


# --- embeddings: CNN -> LC-CNN (tie) -> MLP (Toeplitz matrix) -------------------------------

def tied_lc_weight(conv_weight: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Conv kernel (Co, Ci, k, k) -> LC weight (Co, H', W', Ci, k, k), the same kernel everywhere."""
    co, ci, k1, k2 = conv_weight.shape
    return conv_weight[:, None, None].expand(co, *out_hw, ci, k1, k2).clone()


def toeplitz_matrix(lc_weight: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """LC weight (Co, H', W', Ci, k, k) -> dense (Co*H'*W', Ci*H*W) matrix acting on ``x.flatten(1)``.

    Row (o, i, j) holds kernel [o, i, j] at columns (c, i*k + a, j*k + b) and zeros elsewhere:
    viewing the input (Ci, H, W) as (Ci, H', k, W', k), the matrix is
    ``W[o,i,j,c,p,a,q,b] = lc[o,i,j,c,a,b] * [i == p] * [j == q]``.
    """
    co, h_out, w_out, ci, k1, k2 = lc_weight.shape
    if tuple(input_shape) != (ci, h_out * k1, w_out * k2):
        raise ValueError(f"LC weight of shape {tuple(lc_weight.shape)} does not fit input_shape "
                         f"{tuple(input_shape)}; expected ({ci}, {h_out * k1}, {w_out * k2})")
    eye_h = torch.eye(h_out, dtype=lc_weight.dtype, device=lc_weight.device)
    eye_w = torch.eye(w_out, dtype=lc_weight.dtype, device=lc_weight.device)
    dense = torch.einsum("oijcab,ip,jq->oijcpaqb", lc_weight, eye_h, eye_w)
    return dense.reshape(co * h_out * w_out, ci * h_out * k1 * w_out * k2)


def _empty_like_family(cls, config: ToeplitzConfig, like: nn.Module) -> nn.Module:
    # Built on the meta device, then materialised: no RNG draw, no wasted initialisation.
    with torch.device("meta"):
        model = cls(config)
    ref = next(like.parameters())
    return model.to_empty(device=ref.device).to(ref.dtype)


@torch.no_grad()
def lc_cnn_from_cnn(cnn: ConvNet) -> LocallyConnectedNet:
    """The LC-CNN with every position's kernel (and bias) tied to the CNN's: same function."""
    lc = _empty_like_family(LocallyConnectedNet, cnn.config, cnn)
    lc.hidden.weight.copy_(tied_lc_weight(cnn.hidden.weight, cnn.config.out_hw))
    lc.hidden.bias.copy_(cnn.hidden.bias[:, None, None].expand_as(lc.hidden.bias))
    lc.classifier.load_state_dict(cnn.classifier.state_dict())
    return lc


@torch.no_grad()
def toeplitz_mlp_from_lc_cnn(lc: LocallyConnectedNet) -> ToeplitzMLP:
    """The MLP whose hidden weight is the LC-CNN's (block-sparse) Toeplitz matrix: same function."""
    mlp = _empty_like_family(ToeplitzMLP, lc.config, lc)
    mlp.hidden.weight.copy_(toeplitz_matrix(lc.hidden.weight, lc.config.input_shape))
    mlp.hidden.bias.copy_(lc.hidden.bias.reshape(-1))
    mlp.classifier.load_state_dict(lc.classifier.state_dict())
    return mlp


def toeplitz_mlp_from_cnn(cnn: ConvNet) -> ToeplitzMLP:
    """CNN -> tied LC-CNN -> Toeplitz MLP."""
    return toeplitz_mlp_from_lc_cnn(lc_cnn_from_cnn(cnn))
