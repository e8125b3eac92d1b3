"""The standard Vision Transformer encoder (Dosovitskiy et al. 2021), for seed 001's study.

    image -> patch embedding (Conv2d, kernel = stride = patch) -> prepend the class token
          -> + learned position embeddings
          -> depth x [ x + MHSA(LN(x));  x + MLP(LN(x)) ]        (pre-LayerNorm blocks)
          -> LayerNorm -> linear head on the class token

The MLP is Linear(D, M) -> GELU (exact, erf) -> Linear(M, D) with M = mlp_ratio * D. There is
no dropout: it would be a fourth source of noise that none of the three seeds controls.

Parameter names follow this file, not Hugging Face's; ``hf_vit.py`` maps a local
``ViTForImageClassification`` checkpoint onto them (same function, same logits). With D width,
L depth, M MLP width, P patches of p x p over C channels, K classes and b = 1 with qkv biases:

    C*p*p*D + D                            patch embedding
    D + (P + 1)*D                          class token, position embeddings
    L * (4*D*D + 2*D*M + (6 + 3b)*D + M)   blocks: 2 LayerNorms, Q/K/V/output, fc1/fc2
    2*D + D*K + K                          final LayerNorm, head

e.g. ViT-B/16 at 224x224 with 1000 classes: 86,567,656 (the published 86.6 M).

Initialisation as in ViT's reference code: Linear and patch-embedding weights truncated normal
with std 0.02, biases zero, LayerNorms at (1, 0), class token and positions truncated normal
std 0.02; all drawn from torch's global RNG, in module order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import image_shape, kernel_divides, positive_int

# The prunable matrices of one block (PLATON's and magnitude pruning's targets): attention
# Q, K, V, output and both MLP matrices. Embeddings, norms, biases and the head stay dense.
PRUNABLE_IN_BLOCK = ("attn.query", "attn.key", "attn.value", "attn.out", "mlp.fc1", "mlp.fc2")
INIT_STD = 0.02


@dataclass(frozen=True)
class ViTConfig:
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    patch: int = 4  # patch size = kernel and stride of the patch embedding; must divide H and W
    depth: int = 6  # number of encoder blocks
    width: int = 192  # token width D
    heads: int = 3  # attention heads; each of dimension width / heads
    mlp_ratio: float = 4.0  # MLP hidden width M = mlp_ratio * width (must be a whole number)
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6  # timm's; Hugging Face checkpoints say 1e-12 (hf_vit reads it)
    # > 0: images are resized (bilinear) to image_size x image_size inside forward, before the
    # patch embedding: a checkpoint pretrained at 224 (ViT-B/16) keeps its 197 positions on
    # CIFAR's 32x32 images, as seed 001's ViTImageProcessor did. The input needs no gradient,
    # so the resize adds no backward pass (whose CUDA kernel is not deterministic).
    image_size: int = 0

    def __post_init__(self):
        object.__setattr__(self, "input_shape", image_shape(self.input_shape))
        positive_int(self.num_classes, "num_classes", minimum=2)
        positive_int(self.patch, "kernel (the ViT's patch size)")
        if self.image_size:
            positive_int(self.image_size, "image_size")
        kernel_divides(self.patch, self.token_shape, what="kernel (patch size)")
        positive_int(self.depth, "depth (the ViT's number of blocks)")
        positive_int(self.width, "width (the ViT's token width)")
        positive_int(self.heads, "heads")
        if self.width % self.heads:
            divisors = [h for h in range(1, self.width + 1) if self.width % h == 0]
            raise ValueError(f"heads={self.heads} must divide the ViT's width {self.width} (each head gets "
                             f"width/heads dimensions); valid choices: {divisors[:12]}"
                             f"{' ...' if len(divisors) > 12 else ''}")
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
                or ratio <= 0 or abs(ratio * self.width - round(ratio * self.width)) > 1e-9:
            raise ValueError(f"mlp_ratio must be a positive number with mlp_ratio * width a whole number "
                             f"(width {self.width}), got {ratio!r}")
        if not isinstance(self.qkv_bias, bool):
            raise ValueError(f"qkv_bias must be True or False, got {self.qkv_bias!r}")
        if not (isinstance(self.layer_norm_eps, float) and 0 < self.layer_norm_eps < 1):
            raise ValueError(f"layer_norm_eps must be a small positive float, got {self.layer_norm_eps!r}")

    @property
    def token_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the patch embedding sees (after the resize, if any)."""
        c, h, w = self.input_shape
        return (c, self.image_size, self.image_size) if self.image_size else (c, h, w)

    @property
    def num_patches(self) -> int:
        _, h, w = self.token_shape
        return (h // self.patch) * (w // self.patch)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_dim(self) -> int:
        return round(self.mlp_ratio * self.width)


def vit_parameter_count(cfg: ViTConfig) -> int:
    """The closed form of the module docstring (the tests hold the built model to it)."""
    c = cfg.input_shape[0]
    d, m, k, b = cfg.width, cfg.mlp_dim, cfg.num_classes, int(cfg.qkv_bias)
    block = 4 * d * d + 2 * d * m + (6 + 3 * b) * d + m
    return c * cfg.patch ** 2 * d + d + d + (cfg.num_patches + 1) * d + cfg.depth * block + 2 * d + d * k + k


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate Q, K, V and output matrices (pruned one by one).

    Written out with matmuls and softmax: ``scaled_dot_product_attention``'s fused CUDA kernels
    are not all deterministic in their backward pass, and the trainer runs with
    ``torch.use_deterministic_algorithms(True)``.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key = nn.Linear(dim, dim, bias=qkv_bias)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(y):  # (N, T, D) -> (N, heads, T, head_dim)
            return y.view(n, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attn = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        mixed = attn.softmax(dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(n, t, d))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as ViT and Hugging Face's "gelu"
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg.width, cfg.heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = MLPBlock(cfg.width, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    # The classifier: a checkpoint's head that does not fit is left at its seeded init (hf_vit).
    head_names = ("head.weight", "head.bias")

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        channels, dim = config.input_shape[0], config.width
        self.patch_embed = nn.Conv2d(channels, dim, config.patch, stride=config.patch)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, config.num_patches + 1, dim))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(dim, config.num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=INIT_STD)
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    module.bias.zero_()

    def prunable_names(self) -> tuple[str, ...]:
        """The weight matrices pruning may touch, in a fixed order (the tie-break order)."""
        return tuple(f"blocks.{i}.{m}.weight" for i in range(self.config.depth) for m in PRUNABLE_IN_BLOCK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if size and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, P, D)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        # LayerNorm acts per token, so normalising the class token alone gives the same logits.
        return self.head(self.norm(tokens[:, 0]))
