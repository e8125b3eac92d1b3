"""Labelled uint8 image arrays -> .beton + manifest, deterministically and atomically.

Every dataset reader in this package ends here. The field layout is fixed, so every loader
can read every .beton:

* ``image``: ``NDArrayField(uint8, (H, W, C))`` -- raw pixels, C = 1 for grey datasets and 3
  for colour ones. 28/32/64-pixel datasets are small enough that storing them raw costs
  little and loses nothing (no JPEG artefacts, no decode cost). ``encoding="jpg"`` stores an
  ``RGBImageField`` instead, for large images.
* ``label``: ``IntField``; extra integer label fields (CIFAR-100's ``coarse_label``) follow.

Determinism: FFCV's ``DatasetWriter`` with more than one worker lets the workers race for
pages, so sample placement, the allocation table and even the file size change from run to
run (measured: docs/betons.md). With one worker the file is a pure function of the arrays,
so one worker is the default and the manifest records the count.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import types
from multiprocessing import shared_memory
from pathlib import Path
from typing import Sequence

import numpy as np

from lmc.manifest import BUILDER_VERSION, ManifestError
from beton_builders.sources import SourceError
from lmc import paths
from lmc.config import save_json
from lmc.ffcv_compat import import_ffcv
from lmc.io import atomic_path, sha256_file

# FFCV's smallest page (2 MiB). Its default, 8 MiB, pads every file to a multiple of 8 MiB
# after an 8 MiB header page: mnist5k's 3 MB of pixels took 32 MB. Written down so that a
# change of FFCV's default cannot change our bytes.
PAGE_SIZE = 1 << 21


def page_size_for(sample_bytes: int) -> int:
    """The page size for samples of this many bytes: FFCV cannot split a sample across pages,
    and a worker that meets a larger sample dies while the writer's parent waits forever."""
    size = PAGE_SIZE
    while size < sample_bytes:
        size <<= 1
    return size


class _Indexed:
    """The indexed-dataset view FFCV's writer expects: item i -> tuple in field order."""

    def __init__(self, x: np.ndarray, labels: Sequence[np.ndarray]):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i], *(int(lab[i]) for lab in self.labels))


def check_labels(y, *, name: str, num_classes: int | None = None, what: str = "labels") -> np.ndarray:
    """1-D non-negative integers below ``num_classes``, as int64; else a SourceError naming ``name``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise SourceError(f"{name}: {what} must be a 1-D array, got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise SourceError(f"{name}: {what} must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise SourceError(f"{name}: {what} must be non-negative, found {int(y.min())}")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        bad = int(np.flatnonzero(y >= num_classes)[0])
        raise SourceError(f"{name}: {what} {int(y[bad])} (sample {bad}) is out of range for "
                            f"{num_classes} classes (0..{num_classes - 1})")
    return y.astype(np.int64)


def check_arrays(x: np.ndarray, y: np.ndarray, *, name: str, num_classes: int | None = None) -> np.ndarray:
    """Validate and normalise to (N, H, W, C) uint8; raise a SourceError naming ``name``."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise SourceError(f"{name}: images must be uint8 (0..255), got {x.dtype}; convert them first")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise SourceError(f"{name}: images must be N×H×W or N×H×W×C with C in (1, 3), got shape {x.shape}")
    if len(x) == 0:
        raise SourceError(f"{name}: no images")
    y = check_labels(y, name=name, num_classes=num_classes)
    if len(y) != len(x):
        raise SourceError(f"{name}: {len(x)} images but {len(y)} labels")
    return np.ascontiguousarray(x)


def channel_stats(x: np.ndarray, chunk: int = 1 << 20) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..255 scale, from exact per-channel histograms (fast
    on uint8, no float copy: Tiny-ImageNet's training set as float64 would need 10 GB)."""
    c = x.shape[-1]
    pixels = x.reshape(-1, c)
    hist = np.zeros((c, 256), np.int64)
    for i in range(0, len(pixels), chunk):
        block = pixels[i:i + chunk]
        for ch in range(c):
            hist[ch] += np.bincount(block[:, ch], minlength=256)
    values = np.arange(256, dtype=np.int64)
    count = len(pixels)
    mean = (hist @ values) / count
    var = np.maximum((hist @ (values * values)) / count - mean * mean, 0.0)
    return [float(v) for v in mean], [float(v) for v in np.sqrt(var)]


@contextlib.contextmanager
def _watched_ffcv_writer(desc: str, progress: bool):
    """Run FFCV's writer with a named (or hidden) progress bar and a watchdog.

    FFCV's parent process polls a shared counter until every sample is written; a worker that
    dies (a full disk, an oversized sample) leaves it polling forever. We record the worker
    processes and make the poll's ``sleep`` raise as soon as one has exited with an error.
    """
    import multiprocessing
    import time

    import_ffcv()
    import ffcv.writer
    from tqdm import tqdm

    workers: list = []

    class Worker(multiprocessing.Process):
        def start(self):
            workers.append(self)
            super().start()

    def sleep(seconds):
        time.sleep(seconds)
        failed = [w for w in workers if w.exitcode not in (None, 0)]
        if failed:
            raise RuntimeError(f"FFCV's writer worker exited with code {failed[0].exitcode} (its error is "
                               f"printed above); no .beton was written")

    class SharedMemory(shared_memory.SharedMemory):
        """FFCV's metadata block, under a name that says whose it is (see ``remove_orphaned_shm``)."""

        def __init__(self, name=None, create=False, size=0):
            if create and name is None:
                name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            super().__init__(name=name, create=create, size=size)

    remove_orphaned_shm()
    saved = ffcv.writer.tqdm, ffcv.writer.Process, ffcv.writer.sleep, ffcv.writer.shared_memory
    ffcv.writer.tqdm = lambda *a, **k: tqdm(*a, desc=desc, unit="img", disable=not progress, **k)
    ffcv.writer.Process, ffcv.writer.sleep = Worker, sleep
    ffcv.writer.shared_memory = types.SimpleNamespace(SharedMemory=SharedMemory)
    try:
        yield
    except BaseException:
        # Interrupted (Ctrl-C, a dead sibling): no worker may go on appending to the file.
        for w in workers:
            if w.is_alive():
                w.terminate()
        raise
    finally:
        ffcv.writer.tqdm, ffcv.writer.Process, ffcv.writer.sleep, ffcv.writer.shared_memory = saved


# FFCV's writer keeps its metadata table in POSIX shared memory and frees it only when the write
# completes; a SIGKILLed build (its resource tracker killed with it) leaves the block in /dev/shm.
# Ours are named lmc-beton-<pid>-<random>, so the next build can free those of dead processes,
# and only those: a block of a live process, or of another program, is never touched.
SHM_PREFIX = "lmc-beton-"
SHM_DIR = Path("/dev/shm")


def remove_orphaned_shm() -> list[str]:
    """Unlink the writer blocks whose process is gone; return their names."""
    removed = []
    if not SHM_DIR.is_dir():
        return removed
    for block in SHM_DIR.glob(f"{SHM_PREFIX}*"):
        pid = block.name[len(SHM_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            block.unlink(missing_ok=True)
            removed.append(block.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _source_records(sources) -> list[dict]:
    from beton_builders.sources import file_record

    return [dict(s) if isinstance(s, dict) else file_record(s) for s in sources]


def write_arrays(x: np.ndarray, y: np.ndarray, beton: str | os.PathLike, *, dataset: str, split: str,
                 sources: Sequence = (), num_classes: int | None = None,
                 extra_labels: dict[str, np.ndarray] | None = None, label_names: Sequence[str] | None = None,
                 extra_label_info: dict[str, dict] | None = None, encoding: str = "raw",
                 jpeg_quality: int = 90, num_workers: int = 1, source_note: str = "",
                 extra: dict | None = None, progress: bool = True) -> dict:
    """Write ``x`` (N,H,W[,C] uint8) and ``y`` to ``beton`` and its manifest; return the manifest.

    ``sources``: paths (hashed here) or ready records ``{"path", "bytes", "sha256", ...}``.
    ``extra_label_info``: per extra label, ``{"num_classes": k, "names": [...]}``.
    The .beton is written to a temporary file and renamed only when complete, and the
    manifest is written after it, so an interrupted build leaves no .beton that looks valid.
    """
    from importlib.metadata import version

    import_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    ffcv_version = version("ffcv")  # ffcv.__version__ says 0.0.3rc1 in the 1.0.2 release
    beton = Path(beton)
    x = check_arrays(x, y, name=str(beton), num_classes=num_classes)
    y = np.asarray(y).astype(np.int64)
    n, h, w, c = x.shape
    if num_classes is None:
        num_classes = int(y.max()) + 1
    extra_label_info = extra_label_info or {}
    extra_labels = {k: check_labels(v, name=str(beton), what=k,
                                    num_classes=extra_label_info.get(k, {}).get("num_classes"))
                    for k, v in (extra_labels or {}).items()}
    for k, v in extra_labels.items():
        if len(v) != n:
            raise ManifestError(f"{beton}: {n} images but {len(v)} values of {k!r}")
    if num_workers < 1:
        raise ManifestError(f"num_workers must be at least 1, got {num_workers}")

    # A JPEG can exceed the raw size at high quality; twice the raw size is a safe bound.
    page_size = page_size_for((1 if encoding == "raw" else 2) * h * w * max(c, 3) + 4096)
    if encoding == "raw":
        image_field = NDArrayField(dtype=np.dtype("uint8"), shape=(h, w, c))
        image_spec = {"type": "NDArrayField", "dtype": "uint8", "shape": [h, w, c]}
    elif encoding == "jpg":
        if not 1 <= jpeg_quality <= 100:
            raise ManifestError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if c != 3:
            x = np.repeat(x, 3, axis=-1)
            c = 3
        image_field = RGBImageField(write_mode="jpg", jpeg_quality=jpeg_quality)
        image_spec = {"type": "RGBImageField", "write_mode": "jpg", "jpeg_quality": jpeg_quality}
    else:
        raise ManifestError(f"unknown image encoding {encoding!r}; expected 'raw' or 'jpg'")

    fields = {"image": image_field, "label": IntField()}
    for key in extra_labels:
        fields[key] = IntField()

    counts = np.bincount(y, minlength=num_classes)
    mean, std = channel_stats(x)
    records = _source_records(sources)
    label_info = {}
    for key, values in extra_labels.items():
        k = extra_label_info.get(key, {}).get("num_classes") or int(values.max()) + 1
        label_info[key] = {"num_classes": int(k), "names": extra_label_info.get(key, {}).get("names"),
                           "class_counts": {str(i): int(v) for i, v in enumerate(np.bincount(values, minlength=k))}}

    mpath = paths.manifest_path(beton)
    # Remove a stale manifest first: a crash between the two renames must not pair an old
    # manifest with a new .beton (load_verified would then refuse it, which is what we want).
    if mpath.exists():
        mpath.unlink()
    with atomic_path(beton) as tmp, _watched_ffcv_writer(f"write {dataset}/{beton.name}", progress):
        writer = DatasetWriter(str(tmp), fields, page_size=page_size, num_workers=num_workers)
        try:
            writer.from_indexed_dataset(_Indexed(x, [y, *extra_labels.values()]), chunksize=1000)
        except BaseException:
            # FFCV frees its shared-memory metadata block only on success.
            sm = getattr(writer, "metadata_sm", None)
            if sm is not None and not isinstance(sm, int):
                sm.close()
                sm.unlink()
            raise

    try:
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
            "extra_labels": list(extra_labels),
            "label_info": label_info,
            "field_order": list(fields),
            "fields": {"image": image_spec, "label": {"type": "IntField"},
                       **{k: {"type": "IntField"} for k in extra_labels}},
            # Per-channel statistics on the 0..255 scale (of the raw pixels, before any JPEG).
            "mean": mean,
            "std": std,
            "sources": records,
            "source_note": source_note,
            "writer": {"ffcv": ffcv_version, "num_workers": num_workers, "page_size": page_size,
                       "deterministic": num_workers == 1},
            "beton_sha256": sha256_file(beton),
            "beton_bytes": beton.stat().st_size,
            "builder_version": BUILDER_VERSION,
            **(extra or {}),
        }
        save_json(manifest, mpath)
    except BaseException:
        # A .beton without its manifest would be rebuilt by ensure() anyway; do not leave it.
        beton.unlink(missing_ok=True)
        raise
    return manifest
