"""Per-channel normalisation with a manifest's statistics (0..255 scale).

One definition serves the loader (its lookup table on the CPU, its ``Normalize`` op on a GPU)
and every evaluation of clean images, so a normalised batch is bitwise the same whichever
path made it.
"""
from __future__ import annotations

import torch

from lmc.config import ConfigError


def normalize_with(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.to(torch.float32) - mean) / std


def manifest_stats(manifest: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The manifest's per-channel mean and std as (C, 1, 1) float32 tensors on ``device``."""
    mean = torch.tensor(manifest["mean"], dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(manifest["std"], dtype=torch.float32, device=device).view(-1, 1, 1)
    return mean, std


def normalize(images: torch.Tensor, manifest: dict) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 (x - mean) / std with the manifest's per-channel stats
    (0..255 scale). The loader's normalised batches equal this bitwise."""
    if images.dtype != torch.uint8 or images.dim() < 3 or images.shape[-3] != len(manifest["mean"]):
        raise ConfigError(f"normalize expects uint8 images (..., {len(manifest['mean'])}, H, W), "
                          f"got {images.dtype} {tuple(images.shape)}")
    return normalize_with(images, *manifest_stats(manifest, images.device))
