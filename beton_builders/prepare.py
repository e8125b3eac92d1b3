"""Data preparation for experiments: the .betons a grid's runs read, built once, under a lock.

A grid names each dataset it reads with a :class:`DataSpec`: which builder makes it, from
which source files, and optionally a class-balanced subset of its training split. The app
calls :func:`ensure_dataset` for each before any run starts, so the trainer only ever receives
``.beton`` paths and never builds data itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmc import paths
from lmc.errors import UserError
from lmc.io import exclusive_lock, remove_stale_tmp


@dataclass(frozen=True)
class DataSpec:
    """How one scale obtains a dataset: a registry builder, maybe a source file, maybe a subset."""
    name: str                 # the dataset folder under <results>/betons that the runs read
    builder: str              # beton_builders registry name of the source
    src: str | None = None    # source path; relative paths are under the data root
    train_subset: int = 0     # > 0: the first train_subset / num_classes train images of each class
    # Extra builder options as (key, value) pairs, e.g. the text builder's
    # (("tokenizer", "char"), ("stride", 256), ("vocab_from", "shakespeare_char")); a vocab_from
    # names a dataset under the same results root, whose train .beton must already exist. For an
    # image builder: a dataset derived from its .betons, (("from_split", "test"), ("size", 32),
    # ("test_per_class", 5)) (beton_builders/derived.py).
    options: tuple = ()

    def describe(self) -> str:
        what = f"{self.builder}" + (f" from {self.src}" if self.src else "")
        if self.options:
            what += " (" + ", ".join(f"{k}={v}" for k, v in self.options) + ")"
        if self.train_subset:
            what += f", a class-balanced train subset of {self.train_subset} (the first of each class)"
        return what


def _has_betons(name: str, root) -> bool:
    betons = [paths.beton_path(name, split, root) for split in ("train", "test")]
    return all(b.exists() and paths.manifest_path(b).exists() for b in betons)


def _write_subset(spec, base: dict, root) -> None:
    """The first ``train_subset // classes`` train images of each class (file order); the full test split."""
    import numpy as np

    from lmc.manifest import read_manifest
    from beton_builders.readback import read_beton
    from beton_builders.writer import write_arrays

    for split in ("train", "test"):
        manifest = read_manifest(base[split])
        x, labels = read_beton(base[split])
        y = labels["label"]
        k = manifest["num_classes"]
        if split == "train":
            per_class = spec.train_subset // k
            counts = np.bincount(y, minlength=k)
            if per_class < 1 or counts.min() < per_class:
                raise UserError(f"train_subset={spec.train_subset} of {spec.builder}: needs {per_class} images "
                                f"of each of {k} classes, the smallest class has {counts.min()}")
            keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(k)]))
            x, y = x[keep], y[keep]
        note = (f"first {spec.train_subset // k} per class of " if split == "train" else "") + f"{spec.builder}/{split}"
        write_arrays(x, y, paths.beton_path(spec.name, split, root), dataset=spec.name, split=split,
                     num_classes=k, label_names=manifest.get("label_names"), sources=[base[split]],
                     source_note=note, extra={"subset_of": spec.builder}, progress=False)


def ensure_dataset(spec, root=None) -> dict[str, Path]:
    """The .betons of one DataSpec, built (once, under a lock) when missing."""
    import beton_builders
    from beton_builders.registry import get

    src = spec.src
    named_corpus = src is not None and str(src).startswith("corpus:")
    if src is not None and not named_corpus and not Path(src).expanduser().is_absolute():
        src = paths.data_root() / src
    if not (spec.builder == "text" or spec.options or spec.builder == "npz" or spec.train_subset):
        return beton_builders.ensure(spec.builder, root, src=src)  # which takes the folder's lock itself
    folder = paths.beton_dir(spec.name, root)
    with exclusive_lock(paths.lock_path(folder)):
        remove_stale_tmp(folder)
        if not _has_betons(spec.name, root):
            if spec.builder == "text":
                options = dict(spec.options)
                if options.get("vocab_from"):
                    options["vocab_from"] = paths.beton_path(options["vocab_from"], "train", root)
                get("text").build(paths.beton_dir(spec.name, root), src=src, name=spec.name, root=root,
                                  progress=False, **options)
            elif spec.options:  # an image dataset made from another's .betons (shrunk, re-split)
                from beton_builders import derived

                if spec.train_subset:
                    raise UserError(f"DataSpec {spec.name}: train_subset and options cannot be combined")
                options = derived.check_options(spec.name, dict(spec.options))
                splits = (options["from_split"],) if options["from_split"] else ("train", "test")
                derived.build(spec.name, spec.builder, beton_builders.ensure(spec.builder, root, src=src,
                                                                             splits=splits), options, root)
            elif spec.builder == "npz":
                get("npz").build(paths.beton_dir(spec.name, root), src=src, name=spec.name, progress=False)
            else:
                _write_subset(spec, beton_builders.ensure(spec.builder, root, src=src), root)
    return {s: paths.beton_path(spec.name, s, root) for s in ("train", "test")}


def data_summary(name: str, root=None) -> dict:
    """What a dataset folder actually holds (from its manifests): for the report."""
    from lmc.manifest import read_manifest

    out = {"dataset": name}
    for split in ("train", "test"):
        m = read_manifest(paths.beton_path(name, split, root))
        out[split] = m["num_samples"]
        if m.get("kind") == "tokens":
            out.update({f"{split}_tokens": m["num_tokens"], "vocab_size": m["vocab_size"],
                        "tokenizer": m["tokenizer"]["name"]})
        else:
            out.update(image_shape=m["image_shape"], num_classes=m["num_classes"])
        out[f"{split}_sources"] = sorted({s.get("path", "?") for s in m["sources"]})
        out[f"{split}_note"] = m.get("source_note", "")
    return out
