"""`lmc beton adopt`: a manifest for a .beton that FFCV itself wrote (not ``lmc beton build``).

Researchers already hold .beton files of images and labels written with FFCV's own
``DatasetWriter``: an ``RGBImageField`` (raw, JPEG or mixed) or a uint8 ``NDArrayField`` of
shape (H, W, C) with C in (1, 3), an ``IntField`` label, under any field names and in any
order. Adopting one reads FFCV's header, decodes the images with FFCV's own JPEG decoder
(every sample, or an evenly spaced ``sample`` of them for huge files), and writes the manifest
that the seeded loader checks before it opens a .beton: sha256, counts, per-class counts,
per-channel statistics, image shape, encoding and which field is the image and which the label
(``field_map``). The file itself is never rewritten, so its sha256 stays the one you have.
"""
from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

from lmc import paths
from lmc.config import save_json
from lmc.ffcv_compat import import_ffcv
from lmc.io import sha256_file
from lmc.manifest import BUILDER_VERSION, ManifestError

# RGBImageField's per-sample storage modes (ffcv.fields.rgb_image.IMAGE_MODES).
_JPG, _RAW = 0, 1


def _pick(beton: Path, kind: str, candidates: list[str], asked: str | None, fields: dict) -> str:
    listing = ", ".join(f"{n} ({type(h).__name__})" for n, h in fields.items())
    if asked is not None:
        if asked not in candidates:
            raise ManifestError(f"{beton}: --{kind}-field {asked!r} is not a usable {kind} field; the file holds: {listing}")
        return asked
    if not candidates:
        what = ("an RGBImageField or a uint8 NDArrayField of shape (H, W, C), C in (1, 3)" if kind == "image"
                else "an IntField")
        raise ManifestError(f"{beton}: no {kind} field: expected {what}; the file holds: {listing}")
    if kind == "image" and len(candidates) > 1:
        raise ManifestError(f"{beton}: several image fields ({', '.join(candidates)}); choose one with --image-field")
    return candidates[0]


def _channel_histograms(hist: np.ndarray, images: np.ndarray) -> None:
    """Add the (N, H, W, C) uint8 ``images`` to the per-channel histograms ``hist`` (C, 256)."""
    pixels = images.reshape(-1, images.shape[-1])
    for ch in range(pixels.shape[1]):
        hist[ch] += np.bincount(pixels[:, ch], minlength=256)


def _stats(hist: np.ndarray) -> tuple[list[float], list[float]]:
    values = np.arange(256, dtype=np.int64)
    count = hist[0].sum()
    mean = (hist @ values) / count
    var = np.maximum((hist @ (values * values)) / count - mean * mean, 0.0)
    return [float(v) for v in mean], [float(v) for v in np.sqrt(var)]


def _sample_indices(n: int, sample: int) -> np.ndarray:
    if sample <= 0 or sample >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, sample).round().astype(np.int64))


def adopt(beton: str | os.PathLike, *, name: str | None = None, split: str | None = None,
          num_classes: int | None = None, image_field: str | None = None, label_field: str | None = None,
          sample: int = 0, progress: bool = True) -> dict:
    """Check a foreign .beton and write its manifest beside it; return the manifest.

    ``name`` / ``split`` (default: the folder's name and the file's stem) only label it;
    ``num_classes`` defaults to max(label) + 1; ``sample`` > 0 decodes that many evenly spaced
    samples instead of all (labels are always all read), and the statistics come from them.
    """
    import_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.libffcv import imdecode
    from ffcv.reader import Reader
    from tqdm import tqdm

    beton = Path(beton)
    if not beton.is_file():
        raise ManifestError(f"{beton}: no such file; give the path of a .beton written by FFCV")
    mpath = paths.manifest_path(beton)
    if mpath.exists():
        import json

        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = {"adopted": "unreadable"}  # a damaged manifest: replace it
        if "adopted" not in old:
            raise ManifestError(f"{beton}: already has a manifest written by `lmc beton build` ({mpath.name}); "
                                f"check it with `lmc beton verify`, there is nothing to adopt")
    try:
        reader = Reader(str(beton))
    except Exception as exc:  # FFCV raises assorted errors on a file that is not a .beton
        raise ManifestError(f"{beton}: FFCV cannot read its header ({type(exc).__name__}: {exc}); "
                            f"is it a .beton written by FFCV's DatasetWriter?") from None
    fields = dict(reader.handlers)
    order = list(reader.field_names)
    images_ok = [n for n, h in fields.items() if isinstance(h, RGBImageField)
                 or (isinstance(h, NDArrayField) and np.dtype(h.dtype) == np.uint8 and len(h.shape) == 3
                     and h.shape[2] in (1, 3))]
    image_name = _pick(beton, "image", images_ok, image_field, fields)
    label_name = _pick(beton, "label", [n for n, h in fields.items() if isinstance(h, IntField)], label_field, fields)
    n = int(reader.num_samples)
    if n == 0:
        raise ManifestError(f"{beton}: holds no samples")

    labels = np.asarray(reader.metadata[f"f{order.index(label_name)}"]).astype(np.int64)
    if labels.min() < 0:
        raise ManifestError(f"{beton}: label field {label_name!r} holds {int(labels.min())}; labels must be 0..K-1")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if k < 1 or labels.max() >= k:
        raise ManifestError(f"{beton}: label {int(labels.max())} does not fit --num-classes {num_classes} "
                            f"(labels must be 0..{k - 1})")

    meta = reader.metadata[f"f{order.index(image_name)}"]
    image = fields[image_name]
    data = np.memmap(beton, dtype=np.uint8, mode="r")
    table = reader.alloc_table
    size_at = dict(zip(table["ptr"].tolist(), table["size"].tolist()))
    if isinstance(image, NDArrayField):
        h, w, c = (int(v) for v in image.shape)
        encoding = "raw"
        spec = {"type": "NDArrayField", "dtype": "uint8", "shape": [h, w, c]}
    else:
        heights, widths = np.unique(meta["height"]), np.unique(meta["width"])
        if len(heights) != 1 or len(widths) != 1:
            raise ManifestError(f"{beton}: images of several sizes (heights {heights[:5].tolist()}, widths "
                                f"{widths[:5].tolist()}...); the loader decodes one size only: write the images at one "
                                f"size (resize them before DatasetWriter)")
        h, w, c = int(heights[0]), int(widths[0]), 3
        modes = set(np.unique(meta["mode"]).tolist())
        encoding = {frozenset({_JPG}): "jpg", frozenset({_RAW}): "rgb-raw"}.get(frozenset(modes), "rgb-mixed")
        spec = {"type": "RGBImageField", "write_mode": {"jpg": "jpg", "rgb-raw": "raw"}.get(encoding, "mixed")}

    indices = _sample_indices(n, sample)
    hist = np.zeros((c, 256), np.int64)
    chunk = np.zeros((min(1024, len(indices)), h, w, c), np.uint8)
    filled = 0
    for i in tqdm(indices.tolist(), desc=f"decode {beton.name}", unit="img", disable=not progress):
        row = meta[i]
        ptr = int(row if encoding == "raw" else row["data_ptr"])
        size = size_at.get(ptr)
        if size is None or ptr + size > len(data):
            raise ManifestError(f"{beton}: sample {i} points outside the file's allocations; the file is "
                                f"truncated or damaged")
        out = chunk[filled]
        if encoding == "raw" or row["mode"] == _RAW:
            if size < h * w * c:
                raise ManifestError(f"{beton}: sample {i} holds {size} bytes, an image of {h}x{w}x{c} needs "
                                    f"{h * w * c}; the file is damaged")
            out.reshape(-1)[:] = data[ptr:ptr + h * w * c]
        elif imdecode(np.asarray(data[ptr:ptr + size]), out, h, w, h, w, 0, 0, 1, 1, False, False) != 0:
            raise ManifestError(f"{beton}: the JPEG of sample {i} does not decode; the file is damaged")
        filled += 1
        if filled == len(chunk):
            _channel_histograms(hist, chunk)
            filled = 0
    _channel_histograms(hist, chunk[:filled])
    mean, std = _stats(hist)

    folder = beton.resolve().parent.name
    manifest = {
        "dataset": name or folder or beton.stem,
        "split": split or beton.stem,
        "num_samples": n,
        "image_shape": [h, w, c],
        "image_dtype": "uint8",
        # raw: NDArrayField (our RawImageDecoder); jpg / rgb-raw / rgb-mixed: an RGBImageField whose
        # samples are JPEG, raw or both (FFCV's SimpleRGBImageDecoder reads every kind).
        "image_encoding": encoding,
        "num_classes": k,
        "class_counts": {str(i): int(v) for i, v in enumerate(np.bincount(labels, minlength=k))},
        "label_names": None,
        "extra_labels": [],
        "label_info": {},
        "field_order": order,
        "field_map": {"image": image_name, "label": label_name},
        "fields": {nm: (spec if nm == image_name else {"type": type(hd).__name__}) for nm, hd in fields.items()},
        "mean": mean,
        "std": std,
        "sources": [],
        "source_note": "adopted: written by FFCV outside lmc; where its images came from is not recorded",
        "writer": {"ffcv": "unknown (not written by lmc)", "page_size": int(reader.page_size)},
        "adopted": {"ffcv": version("ffcv"), "decoded": int(len(indices)), "of": n,
                    "statistics_from": "every sample" if len(indices) == n else f"{len(indices)} evenly spaced samples"},
        "beton_sha256": sha256_file(beton),
        "beton_bytes": beton.stat().st_size,
        "builder_version": BUILDER_VERSION,
    }
    save_json(manifest, mpath)
    return manifest
