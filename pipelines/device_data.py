"""The decoded split on a device once, and the epochs of R replicas as stacked batches.

A replica is one run's SGD noise: an (order seed, augmentation seed) pair. For every replica,
epoch e gives bitwise the batches ``make_loader(beton, order_seed=..., aug_seed=...,
augment=..., batch_size=..., drop_last=...).iter_epoch(e)`` gives:

* the order is FFCV's RANDOM traversal, reproduced here without building an FFCV ``Loader``:
  ``default_rng(ffcv_order_seed(order_seed) + e).permutation(arange(N, uint64))`` (ffcv 1.0.2,
  ``traversal_order/random.py``), cut to whole batches with ``drop_last``;
* batches are slices of that order, and each sample's pixels come from the split decoded once
  by ``load_split`` and augmented by ``pipelines.device_augment`` (the kernel's function of
  (aug seed, epoch, index), in torch);
* normalisation is ``normalize_with``, the function behind the loader's lookup table.

No FFCV worker thread, no numba and no host copy per batch: one gather and a few tensor ops
per step for all R replicas at once, on the device the split sits on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from lmc import seeds
from lmc.config import ConfigError
from lmc.manifest import load_verified
from pipelines.augment import AugmentConfig, augmentation_name, get_augmentation
from pipelines.device_augment import augment_on_device
from pipelines import batches_per_epoch
from pipelines.loader import _check_device, _check_int, _check_seed, load_split
from pipelines.normalization import manifest_stats, normalize_with


class Replica(NamedTuple):
    """One run's data noise; ``order_seed=None`` is dataset order (as in ``make_loader``)."""
    order_seed: int | None
    aug_seed: int


def epoch_order(order_seed: int | None, epoch: int, num_samples: int) -> np.ndarray:
    """The dataset indices of epoch ``epoch`` in FFCV's order, before batches are cut (int64)."""
    if order_seed is None:
        return np.arange(num_samples, dtype=np.int64)
    rng = np.random.default_rng(seeds.ffcv_order_seed(order_seed) + epoch)
    # FFCV permutes its uint64 index array; a permutation depends on the length only.
    return rng.permutation(np.arange(num_samples, dtype=np.uint64)).astype(np.int64)


class ReplicaLoader:
    """Stacked batches of R replicas over one split on one device; build it with
    :func:`make_replica_loader`. Step b of epoch e yields images (R, B, C, H, W), labels (R, B)
    and dataset indices (R, B); replica r's slice equals the single-run loader's batch b."""

    def __init__(self, beton: Path, manifest: dict, images: torch.Tensor, labels: torch.Tensor, *,
                 replicas: tuple[Replica, ...], batch_size: int, augment: AugmentConfig, drop_last: bool,
                 normalize: bool):
        self.beton, self.manifest, self.images, self.labels = beton, manifest, images, labels
        self.replicas, self.batch_size, self.augment = replicas, batch_size, augment
        self.drop_last, self.normalize = drop_last, normalize
        self.device = images.device
        self.num_samples = int(images.shape[0])
        # normalize_with on the device, as the loader's CUDA path does; on the CPU it computes the
        # same float32 operations as the CPU loader's lookup table, hence the same bits, and a
        # table lookup per pixel costs ten times more than the arithmetic here.
        self._stats = manifest_stats(manifest, self.device) if normalize else None
        self._keys = torch.tensor([seeds.aug_key(r.aug_seed) for r in replicas], dtype=torch.int64,
                                  device=self.device)

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    def __len__(self) -> int:
        """Steps (batches) per epoch."""
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        """Each replica's indices of epoch ``epoch`` in loader order: int64 (R, samples per epoch)."""
        epoch = _check_int(epoch, "epoch", 0)
        kept = len(self) * self.batch_size
        return np.stack([epoch_order(r.order_seed, epoch, self.num_samples)[:kept] for r in self.replicas])

    def iter_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The stacked batches of epoch ``epoch``: a pure function of (replicas, epoch)."""
        order = torch.from_numpy(self.order(epoch)).to(self.device)
        return self._batches(int(epoch), order)

    def _batches(self, epoch: int, order: torch.Tensor):
        labels = self.labels[order]
        r, (c, h, w) = self.num_replicas, self.images.shape[1:]
        for start in range(0, order.shape[1], self.batch_size):
            idx = order[:, start:start + self.batch_size]
            b = idx.shape[1]
            flat = idx.reshape(-1)
            keys = self._keys[:, None].expand(r, b).reshape(-1)
            x = augment_on_device(self.images[flat], flat, keys, epoch, self.augment)
            if self._stats is not None:
                x = normalize_with(x, *self._stats)
            yield x.view(r, b, c, h, w), labels[:, start:start + b].contiguous(), idx.contiguous()

    def replica(self, r: int) -> "ReplicaView":
        """Replica ``r`` alone, with the single-run loader's interface (``pipelines.digest`` reads it)."""
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < self.num_replicas:
            raise ConfigError(f"replica {r!r} does not exist; this loader has replicas 0..{self.num_replicas - 1}")
        alone = ReplicaLoader(self.beton, self.manifest, self.images, self.labels, replicas=(self.replicas[r],),
                              batch_size=self.batch_size, augment=self.augment, drop_last=self.drop_last,
                              normalize=self.normalize)
        return ReplicaView(alone)

    def describe(self, r: int) -> dict:
        """Replica ``r``'s data, in the keys of ``SeededLoader.describe`` (a run's provenance)."""
        return {"beton": str(self.beton), "beton_sha256": self.manifest["beton_sha256"],
                "order_seed": self.replicas[r].order_seed, "aug_seed": self.replicas[r].aug_seed,
                "augment": augmentation_name(self.augment), "augment_config": self.augment.to_dict(),
                "batch_size": self.batch_size, "drop_last": self.drop_last, "normalize": self.normalize}


class ReplicaView:
    """One replica as a single-run loader: ``iter_epoch`` yields (B, C, H, W), (B,), (B,)."""

    def __init__(self, alone: ReplicaLoader):
        self._alone = alone
        self.manifest, self.normalize, self.num_samples = alone.manifest, alone.normalize, alone.num_samples
        self.batch_size, self.device = alone.batch_size, alone.device

    def __len__(self) -> int:
        return len(self._alone)

    def order(self, epoch: int) -> np.ndarray:
        return self._alone.order(epoch)[0]

    def iter_epoch(self, epoch: int):
        for x, y, idx in self._alone.iter_epoch(epoch):
            yield x[0], y[0], idx[0]

    def describe(self) -> dict:
        return self._alone.describe(0)


def _check_replicas(replicas) -> tuple[Replica, ...]:
    if isinstance(replicas, (str, bytes)) or not isinstance(replicas, Sequence) or not replicas:
        raise ConfigError(f"replicas must be a non-empty list of (order_seed, aug_seed) pairs, got {replicas!r}")
    out = []
    for i, pair in enumerate(replicas):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(f"replica {i}: {pair!r} is not an (order_seed, aug_seed) pair")
        order_seed = None if pair[0] is None else _check_seed(pair[0], f"replica {i} order_seed")
        out.append(Replica(order_seed, _check_seed(pair[1], f"replica {i} aug_seed")))
    return tuple(out)


def make_replica_loader(beton_path, *, batch_size: int, replicas, augment="none", device="cpu",
                        drop_last: bool = False, normalize: bool = True) -> ReplicaLoader:
    """Stacked batches of ``replicas`` ((order_seed, aug_seed) pairs) over ``beton_path``, decoded
    once onto ``device``. Every argument is checked first (``ConfigError`` / ``ManifestError``)."""
    batch_size = _check_int(batch_size, "batch_size", 1)
    pairs = _check_replicas(replicas)
    cfg = get_augmentation(augment)
    dev = _check_device(device)
    for name, value in (("drop_last", drop_last), ("normalize", normalize)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    beton = Path(beton_path)
    manifest = load_verified(beton)
    cfg.check_image(manifest["image_shape"])
    images, labels = load_split(beton, dev)
    return ReplicaLoader(beton, manifest, images, labels, replicas=pairs, batch_size=batch_size, augment=cfg,
                         drop_last=drop_last, normalize=normalize)


def replica_digest(beton_path, *, replicas, augment, epochs, batch_size, device="cpu",
                   drop_last: bool = False) -> list[list[dict]]:
    """``loader_digest``'s per-epoch fingerprints for each replica, from device batches:
    entry r equals ``loader_digest(beton, order_seed=..., aug_seed=..., ...)`` of replica r."""
    from pipelines.digest import epoch_digest

    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    loader = make_replica_loader(beton_path, batch_size=batch_size, replicas=replicas, augment=augment,
                                 device=device, drop_last=drop_last, normalize=False)
    return [[epoch_digest(loader.replica(r), e) for e in range(int(epochs))] for r in range(loader.num_replicas)]
