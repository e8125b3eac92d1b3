"""Small real datasets for the pipelines tests, built once per session (shared by its files)."""
from __future__ import annotations

import numpy as np
import pytest

_BUILT: dict[str, object] = {}

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def mnist_train(tmp_path_factory):
    """The embedded MNIST-5k train split (4,000 real digits, 28x28x1); needs no data root."""
    if "mnist" not in _BUILT:
        from beton_builders import embedded

        _BUILT["mnist"] = embedded.build(tmp_path_factory.mktemp("mnist5k"))["train"]
    return _BUILT["mnist"]


def cifar_arrays():
    from lmc import paths

    npz = paths.data_root() / "cifar10-subset-5k" / "cifar10_subset_5k.npz"
    if not npz.exists():
        pytest.skip(f"needs the CIFAR-10 5k subset at {npz} (set LMC_DATA_ROOT to the shared datasets)")
    with np.load(npz) as data:
        return data["x_train"], data["y_train"]


def cifar_train(tmp_path_factory, n: int = 1000):
    """The first ``n`` images of the CIFAR-10 5k subset (32x32x3) as a raw .beton."""
    key = f"cifar{n}"
    if key not in _BUILT:
        from beton_builders.writer import write_arrays

        x, y = cifar_arrays()
        beton = tmp_path_factory.mktemp(key) / "train.beton"
        write_arrays(x[:n], y[:n], beton, dataset="cifar10_5k", split="train", num_classes=10,
                     label_names=CIFAR_NAMES)
        _BUILT[key] = beton
    return _BUILT[key]


def collect(loader, epoch: int):
    """One epoch as numpy arrays: images (N, C, H, W), labels (N,), indices (N,), batch sizes."""
    xs, ys, idxs, sizes = [], [], [], []
    for x, y, idx in loader.iter_epoch(epoch):
        xs.append(x.numpy())
        ys.append(y.numpy())
        idxs.append(idx.numpy())
        sizes.append(len(x))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(idxs), sizes


def by_index(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return images[np.argsort(indices, kind="stable")]
