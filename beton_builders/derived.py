"""Datasets made from another dataset's .betons: images shrunk, splits re-cut. Deterministic.

The ViT study (seed 001) pretrains on a source dataset before fine-tuning on CIFAR-10. The one
such source this machine has is Tiny-ImageNet's validation split (10,000 images, 200 classes,
64x64); the quick scale uses it at CIFAR's 32x32, cut into its own train and test splits:

    DataSpec("tiny_imagenet_val32", "tiny_imagenet",
             options=(("from_split", "test"), ("size", 32), ("test_per_class", 5)))

Options (``DataSpec.options`` of an image builder; ``beton_builders.prepare.ensure_dataset``):

* ``size``: shrink every image to size x size by an integer factor f, each output pixel the
  mean of its f x f block rounded half up, in exact integer arithmetic (the same pixels as
  OpenCV's ``INTER_AREA``, tested). No library version or CPU changes a byte.
* ``from_split``: build both splits from this one split of the base dataset (the val-only
  Tiny-ImageNet has no train split); then ``test_per_class`` > 0 moves the *last*
  ``test_per_class`` images of each class (in the base's order) to the test split, and the rest
  form the train split. Without ``from_split`` the base's train and test splits are kept.

The base's .betons are built first (``beton_builders.ensure``), then read back and rewritten
raw, so rebuilding gives the same bytes; each manifest names the base .beton it came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmc import paths
from lmc.errors import UserError

OPTIONS = ("from_split", "size", "test_per_class")
SPLITS = ("train", "test")


def check_options(name: str, options: dict) -> dict:
    """The options with their types checked; unknown keys and impossible values are one line."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"DataSpec {name}: unknown option {unknown[0]!r} for an image dataset (tokenizer, stride, ... "
                        f"apply to the text builder only); valid: {', '.join(OPTIONS)}")
    size, per_class = options.get("size", 0), options.get("test_per_class", 0)
    for key, value in (("size", size), ("test_per_class", per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"DataSpec {name}: {key}={value!r} must be a non-negative integer")
    source = options.get("from_split")
    if source is not None and source not in SPLITS:
        raise UserError(f"DataSpec {name}: from_split={source!r} must be one of {', '.join(SPLITS)}")
    if per_class and source is None:
        raise UserError(f"DataSpec {name}: test_per_class needs from_split (the split to cut in two)")
    return {"size": size, "from_split": source, "test_per_class": per_class}


def downscale(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C): f x f block means, rounded half up, exactly."""
    n, h, w, c = x.shape
    if h != w or h % size:
        raise UserError(f"cannot shrink {h}x{w} images to {size}x{size}: the size must divide the side "
                        f"(an integer factor keeps every output pixel the mean of whole pixels)")
    f = h // size
    sums = x.reshape(n, size, f, size, f, c).sum(axis=(2, 4), dtype=np.int64)
    return ((sums + f * f // 2) // (f * f)).astype(np.uint8)


def split_per_class(y: np.ndarray, test_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): the last ``test_per_class`` of each class go to test."""
    test = []
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        if len(where) <= test_per_class:
            raise UserError(f"class {label} has {len(where)} images; test_per_class={test_per_class} would leave "
                            f"none to train on; choose a smaller test_per_class")
        test.append(where[len(where) - test_per_class:])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(y)), test), test


def build(name: str, builder: str, base: dict[str, Path], options: dict, root=None) -> dict[str, Path]:
    """Write dataset ``name`` from the base .betons ``base`` ({split: path}) with ``options``."""
    from beton_builders.readback import read_beton
    from beton_builders.writer import write_arrays
    from lmc.manifest import read_manifest

    opts = check_options(name, options)
    source = opts["from_split"]
    wanted = {}
    if source is None:
        for split in SPLITS:
            x, labels = read_beton(base[split])
            wanted[split] = (x, labels["label"], base[split], f"{builder}/{split}")
    else:
        x, labels = read_beton(base[source])
        y = labels["label"]
        if opts["test_per_class"]:
            train, test = split_per_class(y, opts["test_per_class"])
            wanted["train"] = (x[train], y[train], base[source],
                               f"{builder}/{source} less the last {opts['test_per_class']} of each class")
            wanted["test"] = (x[test], y[test], base[source], f"the last {opts['test_per_class']} of each class "
                                                              f"of {builder}/{source}")
        else:
            wanted = {s: (x, y, base[source], f"{builder}/{source}") for s in SPLITS}
    out = {}
    for split, (x, y, src, note) in wanted.items():
        manifest = read_manifest(src)
        if opts["size"]:
            x = downscale(x, opts["size"])
            note += f", shrunk to {opts['size']}x{opts['size']} (block means)"
        beton = paths.beton_path(name, split, root)
        write_arrays(x, y, beton, dataset=name, split=split, num_classes=manifest["num_classes"],
                     label_names=manifest.get("label_names"), sources=[src], source_note=note,
                     extra={"derived_from": builder, "options": opts}, progress=False)
        out[split] = beton
    return out
