"""Seeded windows of a token .beton: the text analogue of the seeded image loader.

Training (:func:`make_text_loader`), with the image loader's contract:

* the **order seed** decides which stored samples form each batch: FFCV's RANDOM order with
  ``lmc.seeds.ffcv_order_seed``, exactly as for images;
* the **augmentation seed** decides where, inside stored sample i (``2 * stride`` tokens, see
  ``lmc.manifest``), the window of ``block_size + 1`` tokens starts: offset
  ``o = mix64(sample_state(aug_key, SALT_WINDOW, epoch, i)) mod stride``, the counter-based
  hash of ``pipelines/kernel.py`` (tested equal to it). A pure function of (aug seed, epoch,
  sample index): independent of order seed, batch size, batch position and threads. Offsets
  are uniform in ``[0, stride)``, and since sample i starts at ``i * stride``, an epoch's
  windows start uniformly over the stream (the text analogue of a random crop);
* batches are ``(x, y, indices)``: ``x = window[:, :-1]``, ``y = window[:, 1:]``, int64.

The epoch reaches the op in a per-epoch buffer (``pipelines.loader._SeededEpoch``), as for the
image kernel. Offsets and gathering are plain numpy on a few hundred tokens per batch: no
compiled kernel of our own, so nothing for numba's cache to serve stale.

Evaluation (:func:`eval_windows`): every window of the split, in order, no randomness:
non-overlapping windows ``tokens[j*T : j*T + T + 1]`` for ``j = 0 .. (N-1)//T - 1``, so each
token after the first is predicted once, except the last ``(N-1) mod T`` (fewer than T).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import torch

from lmc import seeds
from lmc.config import ConfigError
from lmc.ffcv_compat import import_ffcv, keep_threads
from lmc.manifest import ManifestError, load_verified, manifest_kind, token_stream
from pipelines.loader import EpochOrder, _check_device, _check_int, _check_seed, _SeededEpoch, default_workers
from pipelines.ops import EPOCH_DTYPE, gather_raw

import_ffcv()
# isort: split
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.pipeline import PipelineSpec  # noqa: E402
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402

# The image ops use salts 1-4 (pipelines/kernel.py); the window offset has its own.
SALT_WINDOW = 5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (numpy array arithmetic wraps modulo 2**64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def window_offsets(aug_key: int, epoch: int, indices, span: int) -> np.ndarray:
    """Offset in ``[0, span)`` of the window of each stored sample in ``indices`` (int64)."""
    head = _mix64(_mix64(np.array([int(aug_key) ^ SALT_WINDOW], np.uint64)) ^ np.uint64(epoch))
    state = _mix64(head ^ np.asarray(indices, np.uint64))
    return (_mix64(state) % np.uint64(span)).astype(np.int64)


class TokenBytesDecoder(Operation):
    """The ``tokens`` field's raw bytes, (2 * stride * 4,) uint8 per sample, copied by the
    disk-cached ``gather_raw`` (FFCV's NDArrayDecoder would be compiled afresh per loader)."""

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        shape = (int(np.prod(self.field.shape)) * np.dtype(self.field.dtype).itemsize,)
        return replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype("uint8")), \
            AllocationQuery(shape, np.dtype("uint8"))

    def generate_code(self) -> Callable:
        gather = gather_raw

        def decode_tokens(indices, destination, metadata, storage_state):
            return gather(storage_state[0], metadata, indices, destination)

        return decode_tokens


class SeededWindow(Operation):
    """(n, bytes) of stored samples -> (n, length) int64 tensor: each sample's window at its
    seeded offset (``span`` = 0: offset 0). The tensor is new, owned by the caller."""

    def __init__(self, length: int, span: int, aug_key: int):
        super().__init__()
        self.length, self.span, self.aug_key = int(length), int(span), int(aug_key)

    def declare_state_and_memory(self, previous_state: State) -> Tuple[State, AllocationQuery]:
        state = replace(previous_state, jit_mode=False, shape=(self.length,), dtype=torch.int64)
        # The only memory asked for is the epoch cell, written when each epoch starts.
        return state, AllocationQuery((1,), EPOCH_DTYPE)

    def generate_code(self) -> Callable:
        length, span, key = self.length, self.span, self.aug_key
        columns = np.arange(length, dtype=np.int64)[None, :]

        def seeded_window(raw, epoch_cell, indices):
            tokens = raw.view("<i4")
            if span:
                offsets = window_offsets(key, int(epoch_cell[0, 0]), indices, span)
            else:
                offsets = np.zeros(len(tokens), np.int64)
            return torch.from_numpy(np.take_along_axis(tokens, offsets[:, None] + columns, 1).astype(np.int64))

        seeded_window.with_indices = True
        return seeded_window


def _token_manifest(beton) -> dict:
    manifest = load_verified(beton)
    if manifest_kind(manifest) != "tokens":
        raise ManifestError(f"{beton}: an image .beton; text loaders read token .betons "
                            f"(`lmc beton build text`); images go through pipelines.make_loader")
    return manifest


class TextLoader(EpochOrder):
    """Batches ``(x, y, indices)`` of a token .beton; build it with :func:`make_text_loader`."""

    def __init__(self, beton: Path, manifest: dict, *, batch_size: int, block_size: int, order_seed: int,
                 aug_seed: int, random_offset: bool, device: torch.device, drop_last: bool, workers: int,
                 start_epoch: int):
        self.beton, self.manifest = beton, manifest
        self.batch_size, self.block_size = batch_size, block_size
        self.order_seed, self.aug_seed, self.random_offset = order_seed, aug_seed, random_offset
        self.device, self.drop_last, self.workers = device, drop_last, workers
        self.start_epoch = self.next_epoch = start_epoch
        self.num_samples = int(manifest["num_samples"])
        stride = int(manifest["stride"])
        window = SeededWindow(block_size + 1, stride if random_offset else 0, seeds.aug_key(aug_seed))
        with keep_threads():
            pipelines = {"tokens": PipelineSpec("tokens", decoder=TokenBytesDecoder(), transforms=[window])}
            self._ffcv = Loader(str(beton), batch_size=batch_size, num_workers=workers, os_cache=True,
                                order=OrderOption.RANDOM, seed=seeds.ffcv_order_seed(order_seed),
                                pipelines=pipelines, drop_last=drop_last)
        self._epoch_nodes = [node.id for node in self._ffcv.graph.nodes
                             if isinstance(getattr(node, "operation", None), SeededWindow)]

    def _batches(self, epoch: int, order: np.ndarray):
        order_t = torch.from_numpy(order.copy())
        epoch_iter = _SeededEpoch(self._ffcv, order.astype(np.uint64), epoch, self._epoch_nodes)
        try:
            for b, (windows,) in enumerate(epoch_iter):
                indices = order_t[b * self.batch_size:(b + 1) * self.batch_size]
                x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
                yield x.to(self.device), y.to(self.device), indices.to(self.device)
        finally:
            epoch_iter.stop()

    def __iter__(self):
        """Successive epochs from ``start_epoch``, one per ``for`` loop, as with FFCV's Loader."""
        epoch = self.next_epoch
        self.next_epoch += 1
        return self.iter_epoch(epoch)

    def describe(self) -> dict:
        """What determines the batches, for a run's provenance."""
        return {"beton": str(self.beton), "beton_sha256": self.manifest["beton_sha256"],
                "order_seed": self.order_seed, "aug_seed": self.aug_seed,
                "augment": "window_offset" if self.random_offset else "none", "stride": self.manifest["stride"],
                "batch_size": self.batch_size, "block_size": self.block_size, "drop_last": self.drop_last}


def make_text_loader(beton_path, *, batch_size: int, block_size: int, order_seed: int, aug_seed: int = 0,
                     random_offset: bool = True, device="cpu", drop_last: bool = False, workers: int | None = None,
                     start_epoch: int = 0) -> TextLoader:
    """A seeded loader of (block_size + 1)-token windows; every argument is checked here."""
    batch_size = _check_int(batch_size, "batch_size", 1)
    block_size = _check_int(block_size, "block_size", 1)
    order_seed = _check_seed(order_seed, "order_seed")
    aug_seed = _check_seed(aug_seed, "aug_seed")
    dev = _check_device(device)
    start_epoch = _check_int(start_epoch, "start_epoch", 0)
    workers = default_workers() if workers is None else _check_int(workers, "workers", 1)
    for name, value in (("drop_last", drop_last), ("random_offset", random_offset)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    beton = Path(beton_path)
    manifest = _token_manifest(beton)
    if block_size > manifest["stride"]:
        raise ConfigError(f"block_size {block_size} exceeds the stride {manifest['stride']} of {beton}: windows of "
                          f"block_size + 1 tokens must fit at every offset; rebuild it with --stride {block_size}")
    return TextLoader(beton, manifest, batch_size=batch_size, block_size=block_size, order_seed=order_seed,
                      aug_seed=aug_seed, random_offset=random_offset, device=dev, drop_last=drop_last,
                      workers=workers, start_epoch=start_epoch)


def load_tokens(beton_path) -> np.ndarray:
    """A split's whole token stream (int32), checked against its manifest's sha256."""
    beton = Path(beton_path)
    return token_stream(beton, _token_manifest(beton))


def eval_windows(tokens, block_size: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping (block_size + 1)-token windows covering ``tokens`` (a stream or a
    .beton path), in order: int64 (M, block_size + 1). ``max_windows`` keeps that many, evenly
    spaced over the split (a fixed train subset), still in order."""
    block_size = _check_int(block_size, "block_size", 1)
    if isinstance(tokens, (str, Path)):
        tokens = load_tokens(tokens)
    tokens = np.asarray(tokens)
    count = (len(tokens) - 1) // block_size
    if count < 1:
        raise ConfigError(f"block_size {block_size} is longer than the split ({len(tokens)} tokens hold no window "
                          f"of block_size + 1); use a block size below {max(len(tokens) - 1, 1)}")
    starts = np.arange(count, dtype=np.int64) * block_size
    if max_windows is not None and _check_int(max_windows, "max_windows", 1) < count:
        starts = starts[np.arange(max_windows, dtype=np.int64) * count // max_windows]
    windows = tokens[starts[:, None] + np.arange(block_size + 1)]
    return torch.from_numpy(windows.astype(np.int64))
