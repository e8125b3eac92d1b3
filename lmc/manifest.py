"""The manifest that travels beside every .beton, and its verification.

A manifest lets every later run prove which data it saw: the sha256 of the source files and
of the .beton itself, the sample count, shape, dtype, per-class counts and field spec. The
loaders in ``pipelines/`` call :func:`load_verified` before they open a .beton and refuse a
mismatched or corrupted one; ``lmc beton verify`` adds :func:`check_contents`, which reads the
.beton's own header and label column back and compares them with the manifest.

Two kinds of .beton exist (the manifest's ``kind``; absent means ``"images"``, so every image
.beton built before text existed validates exactly as before):

* ``images``: fields ``image`` + ``label`` (+ extra labels), see ``beton_builders/writer.py``;
* ``tokens``: one field ``tokens`` = ``NDArrayField(int32, (2 * stride,))``. Sample i holds the
  split's tokens ``[start_i, start_i + 2 * stride)`` with ``start_i = min(i * stride, N - 2 * stride)``
  (:func:`window_starts`): consecutive samples overlap by half, so every window of up to
  ``stride + 1`` tokens that starts in ``[i * stride, (i + 1) * stride)`` lies inside sample i, and
  the samples together hold the whole stream (:func:`token_stream`). See ``beton_builders/text.py``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lmc import paths
from lmc.errors import UserError
from lmc.ffcv_compat import import_ffcv
from lmc.io import sha256_file

# 2: sources carry sizes and archive members, manifests gain field_order, label_info, writer.
BUILDER_VERSION = "2"
REQUIRED_KEYS = ("dataset", "split", "num_samples", "image_shape", "image_dtype", "image_encoding",
                 "num_classes", "class_counts", "fields", "sources", "beton_sha256", "beton_bytes",
                 "builder_version", "mean", "std")
REQUIRED_TOKEN_KEYS = ("kind", "dataset", "split", "num_samples", "num_tokens", "token_dtype", "stride",
                       "stored_window", "tokenizer", "vocab_size", "tokens_sha256", "fields", "sources",
                       "beton_sha256", "beton_bytes", "builder_version")
KINDS = {"images": REQUIRED_KEYS, "tokens": REQUIRED_TOKEN_KEYS}


class ManifestError(UserError):
    """A .beton that is missing, mismatched or corrupted. The message names the file and the fix."""


def field_names(manifest: dict) -> tuple[str, str]:
    """The names of the image and label fields: ``image`` and ``label`` in the betons this
    package builds; whatever their writer chose in an adopted one (``field_map``)."""
    field_map = manifest.get("field_map") or {}
    return field_map.get("image", "image"), field_map.get("label", "label")


def _fix(manifest: dict) -> str:
    """What to do about a .beton that no longer matches its manifest."""
    if "adopted" in manifest:
        return "restore the file, or adopt the new one again with `lmc beton adopt`"
    return "rebuild it"


# Hashing a large .beton on every open would be wasteful: remember the files already checked
# in this process, keyed by (path, size, mtime).
_VERIFIED: dict[tuple[str, int, int], str] = {}


def read_manifest(beton: str | os.PathLike) -> dict:
    beton = Path(beton)
    mpath = paths.manifest_path(beton)
    if not beton.exists():
        raise ManifestError(f"{beton}: no such .beton; build it with `lmc beton build`")
    if not mpath.exists():
        raise ManifestError(f"{beton}: its manifest {mpath.name} is missing; rebuild it with `lmc beton build`, "
                            f"or, for a .beton written by FFCV itself, run `lmc beton adopt {beton}`")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{mpath}: not valid JSON ({exc}); rebuild the .beton") from None
    kind = manifest_kind(manifest) if isinstance(manifest, dict) else None
    if kind not in KINDS:
        raise ManifestError(f"{mpath}: unknown kind {kind!r} (expected one of {sorted(KINDS)}); rebuild the .beton")
    missing = [k for k in KINDS[kind] if k not in manifest]
    if missing:
        raise ManifestError(f"{mpath}: missing keys {missing}; it was written by another builder "
                            f"version, rebuild the .beton")
    return manifest


def manifest_kind(manifest: dict) -> str:
    """``"images"`` or ``"tokens"``; manifests written before the key existed are images."""
    return manifest.get("kind", "images")


def load_verified(beton: str | os.PathLike, *, check_hash: bool = True) -> dict:
    """Read the manifest and check the .beton against it (size always, sha256 by default)."""
    beton = Path(beton)
    manifest = read_manifest(beton)
    st = beton.stat()
    if st.st_size != manifest["beton_bytes"]:
        raise ManifestError(f"{beton}: size {st.st_size} bytes differs from the manifest's "
                            f"{manifest['beton_bytes']}; the file is truncated or replaced: {_fix(manifest)}")
    if check_hash:
        key = (str(beton.resolve()), st.st_size, st.st_mtime_ns)
        digest = _VERIFIED.get(key) or sha256_file(beton)
        if digest != manifest["beton_sha256"]:
            raise ManifestError(f"{beton}: sha256 {digest[:12]}… differs from the manifest's "
                                f"{manifest['beton_sha256'][:12]}…; the file is corrupted: {_fix(manifest)}")
        _VERIFIED[key] = digest
    return manifest


def check_contents(beton: str | os.PathLike, manifest: dict) -> None:
    """Compare the .beton's own header, field table and label column with its manifest.

    The sha256 already proves the bytes are the ones built; this proves the manifest describes
    them (a manifest copied from another build, or edited by hand, is caught here).
    """
    beton = Path(beton)
    reader = _reader(beton, manifest)  # imports FFCV
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    if int(reader.num_samples) != manifest["num_samples"]:
        raise ManifestError(f"{beton}: holds {reader.num_samples} samples, its manifest says "
                            f"{manifest['num_samples']}; {_fix(manifest)}")
    if manifest_kind(manifest) == "tokens":
        _check_token_contents(beton, reader, manifest)
        return
    order = manifest.get("field_order") or ["image", "label", *manifest.get("extra_labels", [])]
    if reader.field_names != list(order):
        raise ManifestError(f"{beton}: fields {reader.field_names} differ from the manifest's {list(order)}")
    image_name, label_name = field_names(manifest)
    image = reader.handlers[image_name]
    if manifest["image_encoding"] == "raw":
        shape = list(manifest["image_shape"])
        if not isinstance(image, NDArrayField) or list(image.shape) != shape or image.dtype != np.uint8:
            raise ManifestError(f"{beton}: image field is {type(image).__name__} "
                                f"{getattr(image, 'shape', '')}, manifest says raw uint8 {shape}")
    elif not isinstance(image, RGBImageField):
        raise ManifestError(f"{beton}: image field is {type(image).__name__}, the manifest says an "
                            f"RGBImageField ({manifest['image_encoding']})")
    for name in (label_name, *manifest.get("extra_labels", [])):
        if not isinstance(reader.handlers[name], IntField):
            raise ManifestError(f"{beton}: field {name!r} is not an IntField")
    # FFCV names the metadata columns by position (f0, f1, ...), not by field name.
    labels = np.asarray(reader.metadata[f"f{order.index(label_name)}"]).astype(np.int64)
    counts = np.bincount(labels, minlength=manifest["num_classes"]) if len(labels) else np.zeros(0, int)
    found = {str(k): int(v) for k, v in enumerate(counts)}
    if found != {k: int(v) for k, v in manifest["class_counts"].items()}:
        raise ManifestError(f"{beton}: per-class label counts differ from the manifest's; {_fix(manifest)}")


def _reader(beton: Path, manifest: dict | None = None):
    import_ffcv()
    from ffcv.reader import Reader

    try:
        return Reader(str(beton))
    except Exception as exc:  # FFCV raises AssertionError/ValueError/IndexError on a bad header
        raise ManifestError(f"{beton}: FFCV cannot read its header ({exc}); {_fix(manifest or {})}") from None


# -- token .betons ----------------------------------------------------------------------------

def window_starts(num_tokens: int, stride: int) -> np.ndarray:
    """Where each stored sample of a token .beton starts in its split's stream (int64).

    Samples start every ``stride`` tokens and hold ``2 * stride``; the last one is moved back
    to end exactly at the stream's end, so no token is lost.
    """
    window = 2 * stride
    if stride < 1 or num_tokens < window:
        raise ManifestError(f"{num_tokens} tokens cannot fill one stored window of 2 x stride = {window} "
                            f"tokens; use a smaller --stride (at most {num_tokens // 2})")
    count = -(-(num_tokens - window) // stride) + 1
    return np.minimum(np.arange(count, dtype=np.int64) * stride, num_tokens - window)


def stream_sha256(tokens: np.ndarray) -> str:
    """The fingerprint of a token stream: sha256 of its values as little-endian int32."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(tokens, "<i4").tobytes()).hexdigest()


def token_stream(beton: str | os.PathLike, manifest: dict | None = None) -> np.ndarray:
    """The split's whole token stream (int32, in corpus order), reassembled from its samples
    with FFCV's header and a memory map: no Loader to compile. Checked against the manifest."""
    beton = Path(beton)
    manifest = manifest or load_verified(beton)
    reader = _reader(beton)
    n, window = manifest["num_tokens"], manifest["stored_window"]
    starts = window_starts(n, manifest["stride"])
    if int(reader.num_samples) != len(starts) or reader.field_names != ["tokens"]:
        raise ManifestError(f"{beton}: {reader.num_samples} samples of {reader.field_names}, expected "
                            f"{len(starts)} of ['tokens'] for {n} tokens; rebuild it")
    data = np.memmap(beton, dtype=np.uint8, mode="r")
    stream = np.empty(n, np.int32)
    nbytes = window * 4
    for start, ptr in zip(starts, np.asarray(reader.metadata["f0"], dtype=np.int64)):
        stream[start:start + window] = np.asarray(data[ptr:ptr + nbytes]).view("<i4")
    if stream_sha256(stream) != manifest["tokens_sha256"]:
        raise ManifestError(f"{beton}: its tokens differ from those its manifest describes; rebuild it")
    return stream


def _check_token_contents(beton: Path, reader, manifest: dict) -> None:
    from ffcv.fields import NDArrayField

    field = reader.handlers.get("tokens")
    window = manifest["stored_window"]
    if (reader.field_names != ["tokens"] or not isinstance(field, NDArrayField) or field.dtype != np.int32
            or tuple(field.shape) != (window,)):
        raise ManifestError(f"{beton}: fields {reader.field_names} are not one int32 'tokens' field of "
                            f"{window} tokens as its manifest says; rebuild it")
    stream = token_stream(beton, manifest)
    if len(stream) and (stream.min() < 0 or stream.max() >= manifest["vocab_size"]):
        raise ManifestError(f"{beton}: token ids outside 0..{manifest['vocab_size'] - 1}; rebuild it")


def manifest_hash(beton: str | os.PathLike) -> str:
    """A short id of the data a run saw (the .beton's sha256 as recorded in its manifest)."""
    return read_manifest(beton)["beton_sha256"][:16]
