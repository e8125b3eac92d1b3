"""Labelled uint8 image arrays -> .beton + manifest, deterministically and atomically.

Every dataset reader in this package ends here. The field layout is fixed, so every loader
can read every .beton:

* ``image``: ``NDArrayField(uint8, (H, W, C))`` -- raw pixels, C = 1 for grey datasets and 3
  for colour ones. 28/32/64-pixel datasets are small enough that storing them raw costs
  little and loses nothing (no JPEG artefacts, no decode cost). ``encoding="jpg"`` stores an
  ``RGBImageField`` instead, for large images.
* ``label``: ``IntField``; extra integer label fields (CIFAR-100's ``coarse_label``) follow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from beton_builders.manifest import BUILDER_VERSION, ManifestError
from lmc import paths
from lmc.config import save_json
from lmc.io import atomic_path, sha256_file


class _Indexed:
    """The indexed-dataset view FFCV's writer expects: item i -> tuple in field order."""

    def __init__(self, x: np.ndarray, labels: Sequence[np.ndarray]):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i], *(int(lab[i]) for lab in self.labels))


def check_arrays(x: np.ndarray, y: np.ndarray, *, name: str, num_classes: int | None = None) -> np.ndarray:
    """Validate and normalise to (N, H, W, C) uint8; raise a ManifestError naming ``name``."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8:
        raise ManifestError(f"{name}: images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ManifestError(f"{name}: images must be N×H×W or N×H×W×C with C in (1, 3), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ManifestError(f"{name}: expected {len(x)} labels in a 1-D array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ManifestError(f"{name}: labels must be integers, got {y.dtype}")
    if len(y) and y.min() < 0:
        raise ManifestError(f"{name}: labels must be non-negative, found {int(y.min())}")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise ManifestError(f"{name}: label {int(y.max())} is out of range for {num_classes} classes")
    return np.ascontiguousarray(x)


def write_arrays(x: np.ndarray, y: np.ndarray, beton: str | os.PathLike, *, dataset: str, split: str,
                 sources: Sequence[str | os.PathLike] = (), num_classes: int | None = None,
                 extra_labels: dict[str, np.ndarray] | None = None, label_names: Sequence[str] | None = None,
                 encoding: str = "raw", num_workers: int = 1, source_note: str = "") -> dict:
    """Write ``x`` (N,H,W[,C] uint8) and ``y`` to ``beton`` and its manifest; return the manifest.

    The .beton is written to a temporary file and renamed only when complete, and the
    manifest is written after it, so an interrupted build leaves no .beton that looks valid.
    """
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    beton = Path(beton)
    x = check_arrays(x, y, name=str(beton), num_classes=num_classes)
    y = np.asarray(y).astype(np.int64)
    n, h, w, c = x.shape
    if num_classes is None:
        num_classes = int(y.max()) + 1 if len(y) else 0
    extra_labels = {k: np.asarray(v).astype(np.int64) for k, v in (extra_labels or {}).items()}

    if encoding == "raw":
        image_field = NDArrayField(dtype=np.dtype("uint8"), shape=(h, w, c))
        image_spec = {"type": "NDArrayField", "dtype": "uint8", "shape": [h, w, c]}
    elif encoding == "jpg":
        if c != 3:
            x = np.repeat(x, 3, axis=-1)
            c = 3
        image_field = RGBImageField(write_mode="jpg", jpeg_quality=95)
        image_spec = {"type": "RGBImageField", "write_mode": "jpg", "jpeg_quality": 95}
    else:
        raise ManifestError(f"unknown image encoding {encoding!r}; expected 'raw' or 'jpg'")

    fields = {"image": image_field, "label": IntField()}
    for key in extra_labels:
        fields[key] = IntField()

    mpath = paths.manifest_path(beton)
    # Remove a stale manifest first: a crash between the two renames must not pair an old
    # manifest with a new .beton (load_verified would then refuse it, which is what we want).
    if mpath.exists():
        mpath.unlink()
    with atomic_path(beton) as tmp:
        writer = DatasetWriter(str(tmp), fields, num_workers=num_workers)
        writer.from_indexed_dataset(_Indexed(x, [y, *extra_labels.values()]), chunksize=1000)

    counts = np.bincount(y, minlength=num_classes)
    xf = x.reshape(-1, c).astype(np.float64)
    manifest = {
        "dataset": dataset,
        "split": split,
        "num_samples": int(n),
        "image_shape": [int(h), int(w), int(c)],
        "image_dtype": "uint8",
        "image_encoding": encoding,
        "num_classes": int(num_classes),
        "class_counts": {str(k): int(v) for k, v in enumerate(counts)},
        "label_names": list(label_names) if label_names is not None else None,
        "extra_labels": sorted(extra_labels),
        "fields": {"image": image_spec, "label": {"type": "IntField"},
                   **{k: {"type": "IntField"} for k in extra_labels}},
        # Per-channel statistics on the 0..255 scale, for the loaders' normalisation.
        "mean": [float(v) for v in xf.mean(axis=0)],
        "std": [float(v) for v in xf.std(axis=0)],
        "sources": [{"path": Path(s).name, "sha256": sha256_file(s)} for s in sources],
        "source_note": source_note,
        "beton_sha256": sha256_file(beton),
        "beton_bytes": beton.stat().st_size,
        "builder_version": BUILDER_VERSION,
    }
    save_json(manifest, mpath)
    return manifest
