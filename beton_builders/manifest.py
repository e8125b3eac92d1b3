"""The manifest that travels beside every .beton, and its verification.

A manifest lets every later run prove which data it saw: the sha256 of the source files and
of the .beton itself, the sample count, shape, dtype, per-class counts and field spec. The
loaders in ``pipelines/`` call :func:`load_verified` before they open a .beton and refuse a
mismatched or corrupted one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lmc import paths
from lmc.io import sha256_file

BUILDER_VERSION = "1"
REQUIRED_KEYS = ("dataset", "split", "num_samples", "image_shape", "image_dtype", "image_encoding",
                 "num_classes", "class_counts", "fields", "sources", "beton_sha256", "beton_bytes",
                 "builder_version", "mean", "std")


class ManifestError(ValueError):
    """A .beton that is missing, mismatched or corrupted. The message names the file and the fix."""


# Hashing a large .beton on every open would be wasteful: remember the files already checked
# in this process, keyed by (path, size, mtime).
_VERIFIED: dict[tuple[str, int, int], str] = {}


def read_manifest(beton: str | os.PathLike) -> dict:
    beton = Path(beton)
    mpath = paths.manifest_path(beton)
    if not beton.exists():
        raise ManifestError(f"{beton}: no such .beton; build it with `lmc beton build`")
    if not mpath.exists():
        raise ManifestError(f"{beton}: its manifest {mpath.name} is missing; rebuild it with `lmc beton build`")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{mpath}: not valid JSON ({exc}); rebuild the .beton") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{mpath}: missing keys {missing}; it was written by another builder "
                            f"version, rebuild the .beton")
    return manifest


def load_verified(beton: str | os.PathLike, *, check_hash: bool = True) -> dict:
    """Read the manifest and check the .beton against it (size always, sha256 by default)."""
    beton = Path(beton)
    manifest = read_manifest(beton)
    st = beton.stat()
    if st.st_size != manifest["beton_bytes"]:
        raise ManifestError(f"{beton}: size {st.st_size} bytes differs from the manifest's "
                            f"{manifest['beton_bytes']}; the file is truncated or replaced, rebuild it")
    if check_hash:
        key = (str(beton.resolve()), st.st_size, st.st_mtime_ns)
        digest = _VERIFIED.get(key) or sha256_file(beton)
        if digest != manifest["beton_sha256"]:
            raise ManifestError(f"{beton}: sha256 {digest[:12]}… differs from the manifest's "
                                f"{manifest['beton_sha256'][:12]}…; the file is corrupted, rebuild it")
        _VERIFIED[key] = digest
    return manifest


def manifest_hash(beton: str | os.PathLike) -> str:
    """A short id of the data a run saw (the .beton's sha256 as recorded in its manifest)."""
    return read_manifest(beton)["beton_sha256"][:16]
