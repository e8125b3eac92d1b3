"""Fingerprints of a loader's SGD noise, comparable across machines and processes.

Per epoch:

* ``order_sha256``: the dataset indices in loader order (int64 little-endian);
* ``stream_sha256``: the augmented uint8 images in loader order, then the labels in loader
  order (int64 little-endian). Batch boundaries do not enter, so it ignores the batch size;
* ``by_index_sha256``: the augmented uint8 images sorted by dataset index, so it ignores the
  order seed and checks only the augmentation stream.

A token .beton (``pipelines/text.py``) is digested the same way, with its windows of
``block_size + 1`` tokens (int64 little-endian) in place of the images and no labels: the
stream digest then ignores the batch size and the by-index digest the order seed.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def _le_int64(t) -> bytes:
    return np.ascontiguousarray(t.cpu().numpy(), dtype="<i8").tobytes()


def epoch_digest(loader, epoch: int) -> dict:
    """Digest of one epoch of a ``SeededLoader`` built with ``normalize=False``."""
    import torch

    from pipelines.text import TextLoader

    if isinstance(loader, TextLoader):
        return _text_epoch_digest(loader, epoch)
    if loader.normalize:
        raise ValueError("digest a loader built with normalize=False: it hashes the uint8 pixels")
    order = loader.order(epoch)
    images_h, labels_h = hashlib.sha256(), hashlib.sha256()
    c, (h, w) = len(loader.manifest["mean"]), loader.manifest["image_shape"][:2]
    by_index = np.zeros((loader.num_samples, c, h, w), np.uint8)
    seen = []
    for x, y, idx in loader.iter_epoch(epoch):
        x = x.cpu().contiguous()
        images_h.update(x.numpy().tobytes())
        labels_h.update(_le_int64(y))
        by_index[idx.cpu().numpy()] = x.numpy()
        seen.append(idx.cpu())
    seen = torch.cat(seen).numpy() if seen else np.zeros(0, np.int64)
    if not np.array_equal(seen, order):
        raise RuntimeError(f"epoch {epoch}: the loader yielded indices that differ from its order; "
                           f"this is a bug in pipelines/")
    stream = hashlib.sha256(images_h.digest() + labels_h.digest()).hexdigest()
    # With drop_last, samples outside the epoch stay zero; hashing only those seen keeps it exact.
    kept = np.sort(order)
    return {"epoch": int(epoch),
            "order_sha256": hashlib.sha256(np.ascontiguousarray(order, "<i8").tobytes()).hexdigest(),
            "stream_sha256": stream,
            "by_index_sha256": hashlib.sha256(by_index[kept].tobytes()).hexdigest()}


def _text_epoch_digest(loader, epoch: int) -> dict:
    import torch

    order = loader.order(epoch)
    stream_h = hashlib.sha256()
    windows, seen = [], []
    for x, y, idx in loader.iter_epoch(epoch):
        w = torch.cat([x, y[:, -1:]], dim=1).cpu()
        stream_h.update(_le_int64(w))
        windows.append(w.numpy())
        seen.append(idx.cpu().numpy())
    seen = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    if not np.array_equal(seen, order):
        raise RuntimeError(f"epoch {epoch}: the loader yielded indices that differ from its order; "
                           f"this is a bug in pipelines/")
    by_index = np.concatenate(windows)[np.argsort(seen, kind="stable")] if windows else np.zeros(0, np.int64)
    return {"epoch": int(epoch),
            "order_sha256": hashlib.sha256(np.ascontiguousarray(order, "<i8").tobytes()).hexdigest(),
            "stream_sha256": stream_h.hexdigest(),
            "by_index_sha256": hashlib.sha256(np.ascontiguousarray(by_index, "<i8").tobytes()).hexdigest()}


def _text_loader(beton_path, *, order_seed, aug_seed, augment, batch_size, block_size, workers, drop_last):
    from lmc.config import ConfigError
    from pipelines.text import make_text_loader

    if block_size is None:
        raise ConfigError(f"{beton_path} holds tokens: give the window's block size (--block-size)")
    if augment not in (None, "offset", "none"):
        raise ConfigError(f"augment {augment!r} does not apply to tokens: 'offset' (the seeded window "
                          f"offset, default) or 'none'")
    return make_text_loader(beton_path, batch_size=batch_size, block_size=block_size, order_seed=order_seed,
                            aug_seed=aug_seed, random_offset=augment != "none", workers=workers,
                            drop_last=drop_last)


def loader_digest(beton_path, *, order_seed, aug_seed, augment=None, epochs, batch_size, workers=None,
                  drop_last: bool = False, block_size: int | None = None) -> list[dict]:
    """Digests of epochs ``range(epochs)`` (or the given epoch numbers), one dict per epoch.

    ``augment``: an image preset (default ``none``), or for a token .beton ``offset`` (default)
    or ``none``; ``block_size`` is required for a token .beton and refused for images.
    """
    from lmc.config import ConfigError
    from lmc.manifest import manifest_kind, read_manifest
    from pipelines.loader import make_loader

    if isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool):
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        epoch_list: Iterable[int] = range(int(epochs))
    else:
        epoch_list = list(epochs)
    if manifest_kind(read_manifest(beton_path)) == "tokens":
        loader = _text_loader(beton_path, order_seed=order_seed, aug_seed=aug_seed, augment=augment,
                              batch_size=batch_size, block_size=block_size, workers=workers, drop_last=drop_last)
    elif block_size is not None:
        raise ConfigError(f"{beton_path} holds images: --block-size applies to token .betons only")
    else:
        loader = make_loader(beton_path, batch_size=batch_size, order_seed=order_seed, aug_seed=aug_seed,
                             augment=augment or "none", workers=workers, drop_last=drop_last, normalize=False)
    return [epoch_digest(loader, e) for e in epoch_list]
