"""FFCV Operations of the seeded pipeline.

``SeededAugment`` runs the fused kernel of ``pipelines/kernel.py`` on a batch. It needs the
batch's dataset indices (``with_indices``) and the epoch. The epoch cannot be captured in the
op (numba and FFCV freeze what the code closes over), so it travels in memory that FFCV
allocates afresh for every epoch: the op asks for a tiny int64 buffer, and
``pipelines.loader`` writes the epoch being started into it before the epoch's thread runs.
Each epoch therefore owns its epoch number: an epoch left early, or two epochs iterated at
once, cannot see each other's.

The op itself is not jitted (``jit_mode=False``): it only calls the kernel, which numba caches
on disk, so FFCV has nothing of ours to compile per loader and a warm loader starts fast.
Every op here returns a tensor the caller owns: FFCV's own buffers are recycled a few batches
later, which would silently corrupt a list of batches kept by the caller.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from numba import njit

from pipelines import kernel
from pipelines.augment import AugmentConfig
from pipelines.normalization import normalize_with
from lmc.ffcv_compat import import_ffcv

import_ffcv()  # before any other FFCV import: see lmc/ffcv_compat.py
# isort: split
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402

kernel.warm_up()  # before any Loader exists: see kernel.warm_up

EPOCH_DTYPE = np.dtype("int64")


@njit(cache=True, nogil=True)
def gather_raw(file_bytes, pointers, indices, dst):
    """Copy the raw samples ``indices`` (at ``pointers[index]`` in the mapped .beton) into dst.
    Unsigned indices let LLVM vectorise the copy (numba's negative-index checks prevent it)."""
    n = indices.shape[0]
    flat = dst.reshape(dst.shape[0], -1)
    size = np.uint64(flat.shape[1])
    for i in range(n):
        start, row = np.uint64(pointers[indices[i]]), flat[i]
        for j in range(size):
            row[j] = file_bytes[start + j]
    return dst[:n]


class RawImageDecoder(Operation):
    """Decoder for the raw ``image`` field (NDArrayField uint8 (H, W, C)), like FFCV's
    NDArrayDecoder, but the copy loop is a disk-cached kernel: FFCV compiles each decoder's
    code per Loader, and a two-line wrapper compiles far faster than NDArrayDecoder's loop."""

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        shape, dtype = tuple(self.field.shape), np.dtype(self.field.dtype)
        return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), AllocationQuery(shape, dtype)

    def generate_code(self) -> Callable:
        gather = gather_raw

        def decode_raw(indices, destination, metadata, storage_state):
            # OSCacheManager's state: (the mapped file, allocation pointers, allocation sizes).
            return gather(storage_state[0], metadata, indices, destination)

        return decode_raw


class SeededAugment(Operation):
    """(H, W, C) uint8 samples -> (N, C, H, W) tensor: augmented, then mapped through ``lut``.

    ``lut`` (C, 256) is the identity for uint8 output, or the normalised value of each grey
    level for float32 output (computed by ``pipelines.loader.normalize`` itself).
    """

    def __init__(self, cfg: AugmentConfig, aug_key: int, lut: Optional[np.ndarray] = None,
                 pin_memory: bool = False):
        super().__init__()
        self.cfg = cfg
        self.aug_key = int(aug_key)
        self.lut = lut
        self.pin_memory = pin_memory

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        h, w, c = previous_state.shape
        self.cfg.check_image((h, w, c))
        if self.lut is None:
            self.lut = kernel.identity_lut(c)
        if self.lut.shape != (c, 256):
            raise ValueError(f"lookup table of shape {self.lut.shape} for {c}-channel images")
        out_dtype = torch.from_numpy(self.lut[:0]).dtype
        state = replace(previous_state, jit_mode=False, shape=(c, h, w), dtype=out_dtype)
        # The only memory we ask for is the epoch cell (one per sample slot; we read the first).
        return state, AllocationQuery((1,), EPOCH_DTYPE)

    def generate_code(self) -> Callable:
        run = kernel.augment_batch
        key = np.int64(self.aug_key)
        ints, floats = kernel.pack(self.cfg)
        lut = np.ascontiguousarray(self.lut)
        dtype = torch.from_numpy(lut[:0]).dtype
        pin = self.pin_memory

        def seeded_augment(images, epoch_cell, indices):
            n, h, w, c = images.shape
            out = torch.empty((n, c, h, w), dtype=dtype, pin_memory=pin)
            run(images, out.numpy(), np.ascontiguousarray(indices, np.uint64), key,
                np.int64(epoch_cell[0, 0]), ints, floats, lut)
            return out

        seeded_augment.with_indices = True
        return seeded_augment


def _consumer_stream(device: torch.device):
    """The stream the caller will use the batch on (CUDA only), captured when code is generated
    on the caller's thread; FFCV computes batches on side streams."""
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


class Normalize(Operation):
    """(N, C, H, W) uint8 tensor on any device -> float32 (x - mean) / std, a new tensor.

    Used after ``ToDevice`` on CUDA, where shipping uint8 and normalising on the GPU moves 4x
    fewer bytes; on the CPU the kernel normalises through its lookup table instead.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, device: torch.device):
        super().__init__()
        self.mean, self.std, self.device = mean, std, torch.device(device)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, None]:
        return replace(previous_state, jit_mode=False, dtype=torch.float32), None

    def generate_code(self) -> Callable:
        mean, std = self.mean.to(self.device), self.std.to(self.device)
        stream = _consumer_stream(self.device)

        def normalize_op(images, _):
            out = normalize_with(images, mean, std)
            if stream is not None:
                out.record_stream(stream)
            return out

        return normalize_op


class Owned(Operation):
    """A copy the caller owns (FFCV recycles its own buffers a few batches later)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = torch.device(device)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, None]:
        return replace(previous_state, jit_mode=False), None

    def generate_code(self) -> Callable:
        stream = _consumer_stream(self.device)

        def owned(x, _):
            out = x.clone()
            if stream is not None:
                out.record_stream(stream)
            return out

        return owned
