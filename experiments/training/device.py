"""Where a run computes, and the switches that make its kernels bitwise reproducible there."""
from __future__ import annotations

import os

import torch

from lmc.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when this machine has it, else the CPU. The choice is an execution
    setting, not part of a run's config: provenance and checkpoints record the device used."""
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return torch.device(name)


def set_deterministic() -> None:
    """Bitwise-reproducible kernels. On the CPU, the pinned numerics profile (``lmc.numerics``:
    the same kernels and thread count on any x86-64 CPU with AVX2). cuBLAS needs a fixed
    workspace for deterministic GEMMs, and TF32 would change results between GPU generations,
    so it is off."""
    from lmc import numerics

    numerics.configure_torch()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def describe(device: torch.device) -> dict:
    """The device as provenance records it (type, and the GPU's name on CUDA)."""
    gpu = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
    return {"device": device.type, **gpu}
