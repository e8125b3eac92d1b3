"""The seeded loader: FFCV with three independent seeds' worth of guarantees.

* The order of epoch e is FFCV's ``default_rng(seed + e)`` permutation, with ``seed`` hashed
  from the user's order seed (``lmc.seeds.ffcv_order_seed``) so nearby seeds never overlap.
* The augmentation of dataset sample i in epoch e is a pure function of (augmentation seed,
  e, i, the op's parameters): see ``pipelines/kernel.py`` and ``pipelines/ops.py``.
* Everything is validated before FFCV or numba see it; FFCV's habit of changing torch's
  thread count is undone; no global RNG (python, numpy, torch) is touched.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numba
import numpy as np
import torch

from lmc.manifest import ManifestError, field_names, load_verified, manifest_kind
from lmc import seeds
from lmc.config import ConfigError
from pipelines import batches_per_epoch
from pipelines.augment import AugmentConfig, get_augmentation
from lmc.ffcv_compat import import_ffcv, keep_threads

import_ffcv()  # before any other FFCV import: see lmc/ffcv_compat.py
# isort: split
from ffcv.fields import IntField, NDArrayField, RGBImageField  # noqa: E402
from ffcv.fields.decoders import SimpleRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.loader.epoch_iterator import EpochIterator  # noqa: E402
from ffcv.pipeline import PipelineSpec  # noqa: E402
from ffcv.reader import Reader  # noqa: E402
from ffcv.transforms import ToDevice  # noqa: E402

from pipelines.normalization import manifest_stats, normalize_with  # noqa: E402
from pipelines.ops import Normalize, Owned, RawImageDecoder, SeededAugment  # noqa: E402


def default_workers() -> int:
    """CPUs this process may use, capped by numba's thread count (FFCV refuses more than its
    pool; a sweep worker lowers the count to its share of the machine)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_seed(value, name: str) -> int:
    try:
        return seeds.check_seed(value, name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: the loader supports 'cpu' and 'cuda' only")
    return dev


def _check_fields(beton: Path, manifest: dict) -> None:
    """An image field (raw uint8 NDArrayField or RGBImageField) and an IntField label: ``image``
    and ``label`` in our own betons, the manifest's ``field_map`` names in adopted ones."""
    image_name, label_name = field_names(manifest)
    try:
        with keep_threads():
            handlers = Reader(str(beton)).handlers
    except Exception as exc:  # FFCV raises assorted errors on a bad header
        raise ManifestError(f"{beton}: FFCV cannot read it ({type(exc).__name__}: {exc}); rebuild it") from None
    image, label = handlers.get(image_name), handlers.get(label_name)
    if image is None or label is None:
        raise ManifestError(f"{beton}: expected fields {image_name!r} and {label_name!r}, found {sorted(handlers)}; "
                            f"build it with `lmc beton build` (or `lmc beton adopt` a .beton FFCV wrote)")
    if not isinstance(label, IntField):
        raise ManifestError(f"{beton}: field {label_name!r} is {type(label).__name__}, expected IntField")
    if isinstance(image, NDArrayField):
        h, w, c = manifest["image_shape"]
        if image.dtype != np.uint8 or tuple(image.shape) != (h, w, c) or c not in (1, 3):
            raise ManifestError(f"{beton}: field {image_name!r} holds {image.dtype} {tuple(image.shape)}, expected "
                                f"uint8 (H, W, C) with C in (1, 3) matching the manifest's {[h, w, c]}")
    elif not isinstance(image, RGBImageField):
        raise ManifestError(f"{beton}: field {image_name!r} is {type(image).__name__}, "
                            f"expected NDArrayField or RGBImageField")


class _Stopped(Exception):
    """Raised inside the worker thread to end an epoch the consumer has left."""


_LIVE_EPOCHS: "weakref.WeakSet[_SeededEpoch]" = weakref.WeakSet()


@atexit.register
def _stop_live_epochs():
    # A worker thread still inside a numba kernel while the interpreter tears down can abort
    # the process (SIGABRT), e.g. after a script took one batch and exited.
    for epoch_iter in list(_LIVE_EPOCHS):
        epoch_iter.stop()


class _SeededEpoch(EpochIterator):
    """FFCV's epoch iterator, plus: the epoch number goes into this epoch's own buffers after
    FFCV allocates them and before its worker thread starts; a failure in the worker reaches
    the consumer; ``stop`` ends the worker promptly."""

    def __init__(self, loader, order, epoch: int, epoch_nodes: list[int]):
        self._epoch, self._epoch_nodes, self._failure = epoch, epoch_nodes, None
        self._torch_threads = torch.get_num_threads()  # the consumer's
        super().__init__(loader, order)
        _LIVE_EPOCHS.add(self)

    def start(self):
        for node_id in self._epoch_nodes:
            self.memory_allocations["operation"][node_id][...] = self._epoch
        super().start()

    def run_pipeline(self, *args):
        # FFCV only looks at its terminate flag when its queue is full; check before each batch.
        if self.terminate_event.is_set():
            raise _Stopped
        if self._torch_threads:
            # FFCV's worker sets torch's threads to num_workers; where a setting is process-wide
            # (MKL's), put back the consumer's.
            torch.set_num_threads(self._torch_threads)
            self._torch_threads = 0
        return super().run_pipeline(*args)

    def run(self):
        # FFCV lets an exception end the worker thread silently, and the consumer then waits
        # forever; hand it over instead.
        try:
            super().run()
        except _Stopped:
            pass
        except BaseException as exc:
            self._failure = exc
            self.output_queue.put(None)

    def __next__(self):
        try:
            return super().__next__()
        except StopIteration:
            if self._failure is not None:
                raise RuntimeError(f"the loader's worker thread failed: {self._failure!r}") from self._failure
            raise

    def stop(self):
        """Stop the worker after its current batch and wait for it (emptying the queue it may
        be blocked on)."""
        self.close()
        while self.is_alive() and threading.current_thread() is not self:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.output_queue.get_nowait()
            self.join(timeout=0.05)


class EpochOrder:
    """What every seeded FFCV loader here shares: batches per epoch, an epoch's sample order (a
    pure function of the order seed and the epoch) and its batches. Subclasses set
    ``num_samples``, ``batch_size``, ``drop_last`` and ``_ffcv``, and define ``_batches``."""

    def __len__(self) -> int:
        """Batches per epoch."""
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        """The dataset indices of epoch ``epoch``, in loader order (int64)."""
        epoch = _check_int(epoch, "epoch", 0)
        order = self._ffcv.traversal_order.sample_order(epoch)
        return np.asarray(order[: len(self) * self.batch_size], dtype=np.int64)

    def iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``: a pure function of (seeds, epoch)."""
        order = self.order(epoch)
        return self._batches(int(epoch), order)


class SeededLoader(EpochOrder):
    """Batches ``(images, labels, indices)`` of a .beton; build it with :func:`make_loader`."""

    def __init__(self, beton: Path, manifest: dict, *, batch_size: int, order_seed: int | None, aug_seed: int,
                 augment: AugmentConfig, device: torch.device, drop_last: bool, workers: int,
                 start_epoch: int, normalize: bool):
        self.beton, self.manifest = beton, manifest
        self.batch_size, self.order_seed, self.aug_seed = batch_size, order_seed, aug_seed
        self.augment, self.device, self.drop_last = augment, device, drop_last
        self.workers, self.start_epoch, self.normalize = workers, start_epoch, normalize
        self.next_epoch = start_epoch
        self.num_samples = int(manifest["num_samples"])

        cuda = device.type == "cuda"
        mean, std = manifest_stats(manifest, "cpu")
        channels = len(manifest["mean"])
        lut = None
        if normalize and not cuda:
            grey_levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(channels, 1, 256)
            lut = normalize_with(grey_levels, mean, std).reshape(channels, 256).numpy()
        # raw: our NDArrayField; jpg, rgb-raw, rgb-mixed: an RGBImageField (adopted ones may hold raw samples).
        decoder = RawImageDecoder() if manifest["image_encoding"] == "raw" else SimpleRGBImageDecoder()
        image_name, label_name = field_names(manifest)
        image_ops = [SeededAugment(augment, seeds.aug_key(aug_seed), lut, pin_memory=cuda)]
        if cuda:
            image_ops += [ToDevice(device, non_blocking=True),
                          Normalize(mean, std, device) if normalize else Owned(device)]

        with keep_threads():
            reader = Reader(str(beton))
            names = list(reader.handlers)
            # IntField values live in the metadata table itself (FFCV's IntDecoder only copies
            # them), so labels are taken from there and need no compiled pipeline of their own.
            self._labels = np.array(reader.metadata[f"f{names.index(label_name)}"], dtype=np.int64)
            pipelines = {name: None for name in names}
            # An explicit spec: FFCV would otherwise treat a decoder of a class other than the
            # field's default as a transform and put the default decoder in front of it.
            pipelines[image_name] = PipelineSpec(image_name, decoder=decoder, transforms=image_ops)
            random = order_seed is not None
            # A seed is always given: FFCV draws one from numpy's global RNG otherwise.
            self._ffcv = Loader(str(beton), batch_size=batch_size, num_workers=workers, os_cache=True,
                                order=OrderOption.RANDOM if random else OrderOption.SEQUENTIAL,
                                seed=seeds.ffcv_order_seed(order_seed) if random else 0,
                                pipelines=pipelines, drop_last=drop_last)
        self._epoch_nodes = [node.id for node in self._ffcv.graph.nodes
                             if isinstance(getattr(node, "operation", None), SeededAugment)]

    def _batches(self, epoch: int, order: np.ndarray):
        # The epoch's indices and labels reach the device once per epoch, and each batch's are
        # slices of them: a copy per batch from pageable host memory would make the host wait
        # for the GPU's previous step at every batch, and the loader could not run ahead.
        order_t = torch.from_numpy(np.array(order, dtype=np.int64)).to(self.device)
        labels_t = torch.from_numpy(self._labels).to(self.device)[order_t]
        epoch_iter = _SeededEpoch(self._ffcv, order.astype(np.uint64), epoch, self._epoch_nodes)
        try:
            for b, (images,) in enumerate(epoch_iter):
                batch = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield images, labels_t[batch], order_t[batch]
        finally:
            epoch_iter.stop()

    def __iter__(self):
        """Successive epochs from ``start_epoch``, one per ``for`` loop, as with FFCV's Loader."""
        epoch = self.next_epoch
        self.next_epoch += 1
        return self.iter_epoch(epoch)

    def describe(self) -> dict:
        """What determines the batches, for a run's provenance."""
        from pipelines.augment import augmentation_name

        return {"beton": str(self.beton), "beton_sha256": self.manifest["beton_sha256"],
                "order_seed": self.order_seed, "aug_seed": self.aug_seed,
                "augment": augmentation_name(self.augment), "augment_config": self.augment.to_dict(),
                "batch_size": self.batch_size, "drop_last": self.drop_last, "normalize": self.normalize}


def make_loader(beton_path, *, batch_size: int, order_seed: int | None, aug_seed: int = 0, augment="none",
                device="cpu", drop_last: bool = False, workers: int | None = None, start_epoch: int = 0,
                normalize: bool = True) -> SeededLoader:
    """A seeded loader over ``beton_path``; ``order_seed=None`` means sequential order (evaluation).

    Every argument is checked here: bad input raises ConfigError or ManifestError, never an
    error from inside FFCV or numba.
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    if order_seed is not None:
        order_seed = _check_seed(order_seed, "order_seed")
    aug_seed = _check_seed(aug_seed, "aug_seed")
    cfg = get_augmentation(augment)
    dev = _check_device(device)
    start_epoch = _check_int(start_epoch, "start_epoch", 0)
    cap = numba.config.NUMBA_NUM_THREADS
    workers = default_workers() if workers is None else _check_int(workers, "workers", 1)
    if workers > cap:
        raise ConfigError(f"workers={workers} exceeds numba's thread pool of {cap} "
                          f"(NUMBA_NUM_THREADS); use at most {cap}")
    for name, value in (("drop_last", drop_last), ("normalize", normalize)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    beton = Path(beton_path)
    manifest = load_verified(beton)
    if manifest_kind(manifest) != "images":
        raise ManifestError(f"{beton}: a token .beton; read it with pipelines.text (make_text_loader, "
                            f"eval_windows), not with the image loader")
    cfg.check_image(manifest["image_shape"])
    _check_fields(beton, manifest)
    return SeededLoader(beton, manifest, batch_size=batch_size, order_seed=order_seed, aug_seed=aug_seed,
                        augment=cfg, device=dev, drop_last=drop_last, workers=workers,
                        start_epoch=start_epoch, normalize=normalize)


# Decoded splits kept per process (least recently used first out), so that the runs of a sweep
# worker, and the interpolation after them, decode each split once instead of once per run:
# building the FFCV Loader that decodes it costs about a second. Keyed by the file's identity
# (path, size, mtime): a rebuilt .beton is decoded afresh.
_SPLITS: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()


def _split_cache_bytes() -> int:
    value = os.environ.get("LMC_SPLIT_CACHE_MB", "2048")
    if not value.strip().isdigit():
        raise ConfigError(f"LMC_SPLIT_CACHE_MB={value!r} is invalid: expected a size in MiB (0 = no cache)")
    return int(value) << 20


SPLIT_CACHE_BYTES = _split_cache_bytes()


def load_split(beton_path, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split, decoded once in dataset order without augmentation:
    uint8 (N, C, H, W) and int64 (N,), on ``device``.

    The CPU tensors are shared with a per-process cache (``LMC_SPLIT_CACHE_MB``, default 2048;
    0 turns it off): read them, never modify them in place.
    """
    dev = _check_device(device)
    beton = Path(beton_path)
    load_verified(beton)  # size and sha256 (hashed once per file version), cache hit or not
    st = beton.stat()
    key = (str(beton.resolve()), st.st_size, st.st_mtime_ns)
    split = _SPLITS.get(key)
    if split is None:
        loader = make_loader(beton, batch_size=1024, order_seed=None, augment="none", normalize=False)
        images, labels = [], []
        for x, y, _ in loader.iter_epoch(0):
            images.append(x)
            labels.append(y)
        split = (torch.cat(images), torch.cat(labels))
        nbytes = sum(t.numel() * t.element_size() for t in split)
        if nbytes <= SPLIT_CACHE_BYTES:
            _SPLITS[key] = split
            while sum(t.numel() * t.element_size() for v in _SPLITS.values() for t in v) > SPLIT_CACHE_BYTES:
                _SPLITS.popitem(last=False)
    else:
        _SPLITS.move_to_end(key)
    return split[0].to(dev), split[1].to(dev)
