"""The model zoo: one family per file, one registry, one builder.

    build_model("mlp", (1, 28, 28), 10, depth=2, width=512, slope=0.0)

Every model takes float32 images (N, C, H, W) and returns logits (N, num_classes). Models are
built on the CPU with torch's default initialisation, drawing only from torch's global RNG
(the trainer seeds it inside ``torch.random.fork_rng``), hold no buffers (so a weighted
average of two state_dicts is a valid model) and use only ops allowed under
``torch.use_deterministic_algorithms(True)``.

Which keyword each family reads (the others are validated but ignored):

==============  ==========================================================================
linear          depth (weight layers, >= 1; 1 = logistic regression), width
mlp             depth (>= 2), width, slope (Leaky-ReLU negative slope in [0, 1])
cnn             channels (Co), kernel (= stride, no padding)
lc_cnn          channels, kernel
toeplitz_mlp    channels, kernel (hidden width Co*(H/k)*(W/k))
attention       kernel (patch size), heads, head_dim, embed_dim (None -> 648)
vit             kernel (patch size), depth (blocks), width (token width), heads, mlp_ratio,
                image_size (0 = the data's; > 0: inputs resized to it inside the model)
==============  ==========================================================================

The ``vit`` family uses ViT's own initialisation (truncated normal, std 0.02; ``vit.py``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._checks import image_shape, positive_int, positive_number, slope_in_unit_interval
from .attention import PAPER_EMBED_DIM, AttentionConfig, AttentionNet
from .init import INIT_SCHEMES, apply_init
from .linear import LinearConfig, LinearNet
from .mlp import MLP, MLPConfig
from .toeplitz import (ConvNet, LocallyConnectedNet, ToeplitzConfig, ToeplitzMLP,
                       lc_cnn_from_cnn, toeplitz_matrix, toeplitz_mlp_from_cnn,
                       toeplitz_mlp_from_lc_cnn)
from .gpt import GPT, GPTConfig
from .vit import ViT, ViTConfig

__all__ = [
    "MODEL_NAMES", "INIT_SCHEMES", "build_model", "count_parameters", "parameter_table",
    "lc_cnn_from_cnn", "toeplitz_mlp_from_lc_cnn", "toeplitz_mlp_from_cnn", "toeplitz_matrix",
    "PAPER_EMBED_DIM", "PAPER_MILLIONS", "ViT", "ViTConfig", "GPT", "GPTConfig", "IMAGE_MODELS", "TEXT_MODELS",
]


def _toeplitz(cls) -> Callable[..., nn.Module]:
    return lambda shape, classes, hp: cls(ToeplitzConfig(shape, classes, hp["channels"], hp["kernel"]))


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "linear": lambda shape, classes, hp: LinearNet(LinearConfig(shape, classes, hp["depth"], hp["width"])),
    "mlp": lambda shape, classes, hp: MLP(MLPConfig(shape, classes, hp["depth"], hp["width"], hp["slope"])),
    "cnn": _toeplitz(ConvNet),
    "lc_cnn": _toeplitz(LocallyConnectedNet),
    "toeplitz_mlp": _toeplitz(ToeplitzMLP),
    "attention": lambda shape, classes, hp: AttentionNet(AttentionConfig(
        shape, classes, patch=hp["kernel"], heads=hp["heads"], head_dim=hp["head_dim"],
        embed_dim=PAPER_EMBED_DIM if hp["embed_dim"] is None else hp["embed_dim"])),
    "vit": lambda shape, classes, hp: ViT(ViTConfig(
        shape, classes, patch=hp["kernel"], depth=hp["depth"], width=hp["width"], heads=hp["heads"],
        mlp_ratio=hp["mlp_ratio"], image_size=hp["image_size"])),
}
# Families of token sequences: built from a vocabulary and a context length instead of an image shape.
_TEXT_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "gpt": lambda vocab_size, block_size, hp: GPT(GPTConfig(
        n_embd=hp["width"], n_layer=hp["depth"], n_head=hp["heads"], block_size=block_size, vocab_size=vocab_size)),
}
IMAGE_MODELS: tuple[str, ...] = tuple(_REGISTRY)
TEXT_MODELS: tuple[str, ...] = tuple(_TEXT_REGISTRY)
MODEL_NAMES: tuple[str, ...] = IMAGE_MODELS + TEXT_MODELS

# Table 3 of the paper (2-layer networks on CIFAR-10, kernel 4, no padding) and the
# attention model's "approximately 1.08 M" (Appendix D), in millions of parameters.
PAPER_MILLIONS: dict[str, float] = {"cnn": 0.09, "lc_cnn": 0.48, "toeplitz_mlp": 25.26, "attention": 1.08}


def build_model(name: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None, *,
                vocab_size: int | None = None, block_size: int | None = None,
                depth: int = 2, width: int = 512, slope: float = 0.0, channels: int = 128,
                kernel: int = 4, heads: int = 8, head_dim: int = 48,
                embed_dim: int | None = None, mlp_ratio: float = 4.0, image_size: int = 0,
                init_scheme: str = "torch") -> nn.Module:
    """A freshly initialised model of family ``name``: for (C, H, W) images and ``num_classes``,
    or (``gpt``) for a vocabulary of ``vocab_size`` tokens and a context of ``block_size``;
    ``init_scheme`` other than ``torch`` re-draws its weights (``models/init.py``)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if name in _TEXT_REGISTRY:
        if vocab_size is None or block_size is None:
            raise ValueError(f"model {name!r} reads token sequences: it needs vocab_size and block_size "
                             f"(a text dataset), not an image shape")
        hp = dict(depth=positive_int(depth, "depth"), width=positive_int(width, "width"),
                  heads=positive_int(heads, "heads"))
        return apply_init(_TEXT_REGISTRY[name](positive_int(vocab_size, "vocab_size", minimum=2),
                                               positive_int(block_size, "block_size"), hp), init_scheme)
    if input_shape is None or num_classes is None:
        raise ValueError(f"model {name!r} classifies images: it needs an input shape and num_classes "
                         f"(an image dataset), not a vocabulary")
    input_shape = image_shape(input_shape)
    positive_int(num_classes, "num_classes", minimum=2)
    # Checked for every family, so a typo fails even where the value is not used.
    hp = dict(depth=positive_int(depth, "depth"), width=positive_int(width, "width"),
              slope=slope_in_unit_interval(slope), channels=positive_int(channels, "channels"),
              kernel=positive_int(kernel, "kernel"), heads=positive_int(heads, "heads"),
              head_dim=positive_int(head_dim, "head_dim"),
              embed_dim=None if embed_dim is None else positive_int(embed_dim, "embed_dim"),
              mlp_ratio=positive_number(mlp_ratio, "mlp_ratio"),
              image_size=positive_int(image_size, "image_size", minimum=0))
    return apply_init(_REGISTRY[name](input_shape, int(num_classes), hp), init_scheme)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (weights and biases; shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def _note(name: str, shape: tuple[int, int, int], num_classes: int) -> str:
    c, h, w = shape
    hidden = 128 * (h // 4) * (w // 4)
    return {
        "linear": "2 weight layers, width 512, no activation (no paper count)",
        "mlp": "2 weight layers (the minimal model), width 512, ReLU (no paper count)",
        "cnn": f"Conv2d({c},128,k=4,s=4) + ReLU + Linear({hidden},{num_classes}); biases counted",
        "lc_cnn": f"per-position kernels and biases (128x{h // 4}x{w // 4}) + Linear({hidden},{num_classes}); "
                  "biases counted",
        "toeplitz_mlp": f"Linear({c * h * w},{hidden}) + ReLU + Linear({hidden},{num_classes}); "
                        "biases counted (Table 3's 25.26 needs them)",
        "attention": f"D={PAPER_EMBED_DIM}, 8 heads x 48, one block without skip/MLP; "
                     "patch/qkv/proj biases as in ViT",
        "vit": "ViT encoder: 2 pre-LN blocks, width 512, 8 heads, MLP ratio 4, patch 4 (no paper count)",
    }[name]


def parameter_table(dataset_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> list[dict]:
    """One row per family at the paper's defaults (build_model's defaults): Table 3 side by side.

    ``paper_millions`` is the paper's value (Table 3; 1.08 for attention) for CIFAR-10-shaped
    inputs, (3, 32, 32) with 10 classes, where the paper reports it, and None otherwise.
    Models are built on the meta device: nothing is allocated and the global RNG is untouched.
    """
    is_cifar10 = tuple(dataset_shape) == (3, 32, 32) and num_classes == 10
    rows = []
    for name in IMAGE_MODELS:
        with torch.device("meta"):
            params = count_parameters(build_model(name, dataset_shape, num_classes))
        rows.append({"name": name, "params": params, "params_millions": round(params / 1e6, 2),
                     "paper_millions": PAPER_MILLIONS.get(name) if is_cifar10 else None,
                     "note": _note(name, tuple(dataset_shape), num_classes)})
    return rows
