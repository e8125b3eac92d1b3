"""Fixtures for the beton_builders tests: real data, written back in each dataset's own format.

The real files live in the shared data root (``$LMC_DATA_ROOT``, default ../shared/datasets);
a test that needs one skips with the reason when it is absent. The writers below produce
byte-level standard layouts from those real images: idx files, Python-2-style CIFAR pickles
(what the 2009 distribution holds), the tiny-imagenet-200 folder/zip with the JPEG bytes
copied, never re-encoded, so decoded pixels can be compared exactly.
"""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lmc import paths

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# CIFAR-100's fixed fine -> coarse (superclass) map, in fine-label order.
CIFAR100_COARSE_OF_FINE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13])
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def need(rel: str) -> Path:
    """A path under the shared data root, or skip the test saying what is missing."""
    path = paths.data_root() / rel
    if not path.exists():
        pytest.skip(f"real data {path} is absent (set LMC_DATA_ROOT to the shared datasets folder)")
    return path


def need_fashion() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{FASHION_DIR} is absent: install Debian's package dataset-fashion-mnist "
                    f"(scripts/setup.sh does where apt is available)")
    return FASHION_DIR


def listing(folder: Path) -> list[str]:
    """Every file left under ``folder`` (to prove a failed build left nothing)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- idx ---------------------------------------------------------------------------------------

def idx_reference(path: Path) -> np.ndarray:
    """An idx.gz read the plainest way (offset 8 for labels, 16 for images), as a reference."""
    import gzip

    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(dims)


# -- CIFAR pickles -----------------------------------------------------------------------------

class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickles the way Python 2's cPickle wrote the CIFAR files: byte strings (and
    ASCII text) as BINSTRING opcodes, not Python 3's ``_codecs.encode`` calls."""

    def _save_binstring(self, obj: bytes):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    def _save_str(self, obj: str):
        if obj.isascii():
            return self._save_binstring(obj.encode("ascii"))
        return pickle._Pickler.save_str(self, obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = _save_binstring
    dispatch[str] = _save_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 spells the module numpy._core; the 2009 files say numpy.core.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(x: np.ndarray, labels: dict[str, np.ndarray], batch_label: str) -> bytes:
    from beton_builders.cifar import encode_batch

    d = {b"batch_label": batch_label.encode(), b"data": encode_batch(x),
         b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(x))]}
    d.update({k.encode(): [int(v) for v in vals] for k, vals in labels.items()})
    return py2_pickle(d)


def write_cifar10(root: Path, x_train, y_train, x_test, y_test, n_batches: int = 5) -> Path:
    """``root/cifar-10-batches-py/`` with data_batch_1..n, test_batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(x_train)), n_batches), 1):
        (folder / f"data_batch_{i}").write_bytes(
            cifar_batch(x_train[idx], {"labels": y_train[idx]}, f"training batch {i} of {n_batches}"))
    (folder / "test_batch").write_bytes(cifar_batch(x_test, {"labels": y_test}, "testing batch 1 of 1"))
    (folder / "batches.meta").write_bytes(py2_pickle({b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                                      b"label_names": [n.encode() for n in CIFAR10_NAMES]}))
    return folder


def write_cifar100(root: Path, x_train, y_train, x_test, y_test) -> Path:
    """``root/cifar-100-python/`` with train, test and meta (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        labels = {"fine_labels": y, "coarse_labels": CIFAR100_COARSE_OF_FINE[y]}
        (folder / name).write_bytes(cifar_batch(x, labels, name))
    (folder / "meta").write_bytes(py2_pickle({b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
                                              b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}))
    return folder


def tar_gz(folder: Path, archive: Path) -> Path:
    """The folder as a .tar.gz holding ``<folder.name>/...``, like the downloads."""
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return archive


# -- Tiny-ImageNet -----------------------------------------------------------------------------

def tiny_val(tar_path: Path) -> tuple[list[str], list[tuple[str, str]], dict[str, bytes]]:
    """(wnids, [(file, wnid)] in annotation order, {file: JPEG bytes}) from the val tar."""
    with tarfile.open(tar_path) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    root = "tiny-imagenet-200/"
    wnids = files[root + "wnids.txt"].decode().split()
    ann = [tuple(line.split("\t")[:2]) for line in files[root + "val/val_annotations.txt"].decode().splitlines()]
    jpegs = {name.rsplit("/", 1)[1]: data for name, data in files.items() if name.endswith(".JPEG")}
    return wnids, ann, jpegs


def write_tiny_imagenet(root: Path, tar_path: Path, per_class: int = 2, first_class_extra: int = 11,
                        val_count: int = 300) -> tuple[Path, dict]:
    """A ``tiny-imagenet-200/`` folder in the standard layout, from real val JPEGs.

    train/<wnid>/images/<wnid>_<k>.JPEG takes ``per_class`` val images of each class (the
    first class gets ``first_class_extra`` more, so names run past _9 and natural order
    matters); every greyscale image of those classes' first 10 is included too. val/ keeps the
    first ``val_count`` annotations. Returns the folder and the expected (bytes, label) lists.
    """
    from PIL import Image

    wnids, ann, jpegs = tiny_val(tar_path)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    by_class: dict[str, list[str]] = {w: [] for w in wnids}
    for fname, wnid in ann:
        by_class[wnid].append(fname)
    train = []
    for label, wnid in enumerate(wnids):
        take = per_class + (first_class_extra if label == 0 else 0)
        chosen = [f for i, f in enumerate(by_class[wnid][:10])
                  if i < take or Image.open(io.BytesIO(jpegs[f])).mode == "L"]
        (folder / "train" / wnid / "images").mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k, f in enumerate(chosen):
            (folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG").write_bytes(jpegs[f])
            train.append((jpegs[f], label))
    lines, val = [], []
    for fname, wnid in ann[:val_count]:
        (folder / "val" / "images" / fname).write_bytes(jpegs[fname])
        lines.append(f"{fname}\t{wnid}\t0\t0\t63\t63\n")
        val.append((jpegs[fname], wnids.index(wnid)))
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder, {"train": train, "test": val}


def zip_folder(folder: Path, archive: Path) -> Path:
    """The folder as a .zip holding ``<folder.name>/...``, like tiny-imagenet-200.zip."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, str(p.relative_to(folder.parent)))
    return archive


def pil_rgb(jpeg: bytes) -> np.ndarray:
    """An independent decoder (Pillow) as the reference for the builder's OpenCV decode."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
