"""CIFAR-10 and CIFAR-100 from the python-pickle distribution (Krizhevsky, 2009).

``--src`` is the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` folder, its parent,
or the ``.tar.gz`` as downloaded (read in place, never extracted). Each pickle is a dict with
``data`` (N x 3072 uint8: the red plane, then green, then blue, each 32x32 row-major) and
``labels`` (CIFAR-10) or ``fine_labels`` + ``coarse_labels`` (CIFAR-100). CIFAR-100 keeps both:
``label`` is the fine class (100), ``coarse_label`` the superclass (20).

The pickles are read with an unpickler that only builds numpy arrays, lists, dicts and
strings: a pickle from elsewhere cannot run code while we read it.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beton_builders import download as dl
from beton_builders.base import Split, check_splits, write_splits
from beton_builders.download import Remote, place_hint
from beton_builders.sources import SourceError
from beton_builders.sources import SourceTree, pick_src
from beton_builders.writer import check_arrays, check_labels
from lmc import paths

# The globals numpy's array pickles refer to (numpy 1 and 2 spell the module differently).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a CIFAR pickle)")
        return super().find_class(module, name)


def load_pickle(data: bytes, where: str) -> dict:
    """The dict in a CIFAR pickle, with ``str`` keys whether it was written by Python 2 or 3."""
    try:
        # encoding="bytes": the official files come from Python 2, whose str keys arrive as bytes.
        obj = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # truncated data raises EOFError, UnpicklingError, ValueError, ...
        raise SourceError(f"{where}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{where}: holds a {type(obj).__name__}, expected the CIFAR dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _key(d: dict, key: str, where: str):
    if key not in d:
        raise SourceError(f"{where}: missing key {key!r} (has {sorted(d)}); not a standard CIFAR pickle")
    return d[key]


def _names(d: dict, key: str, where: str) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _key(d, key, where)]


def decode_batch(d: dict, where: str) -> np.ndarray:
    """N x 3072 planar bytes -> N x 32 x 32 x 3 (HWC, what the .beton stores)."""
    data = np.asarray(_key(d, "data", where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise SourceError(f"{where}: 'data' is {data.dtype} {data.shape}, expected uint8 N x 3072")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def encode_batch(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`decode_batch` (used to write test fixtures)."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))


@dataclass(frozen=True)
class CifarDataset:
    NAME: str
    folder: str           # the folder inside the archive
    archive: Remote
    meta: str             # the metadata pickle
    files: dict           # split -> pickles, in order
    labels: dict          # field name in the .beton -> (key in the pickle, key of its names in meta)

    def default_src(self) -> list[Path]:
        root = paths.data_root()
        return [root / self.folder, root / self.archive.filename, root / self.NAME]

    def load(self, src: Path, splits) -> dict[str, Split]:
        tree = SourceTree(src, self.meta, f"the {self.NAME} python distribution ({self.folder}/ or "
                                          f"{self.archive.filename})")
        meta_where = tree.where(self.meta)
        meta = load_pickle(tree.read(self.meta), meta_where)
        names = {field: _names(meta, names_key, meta_where) for field, (_, names_key) in self.labels.items()}
        meta_record = tree.take_records()
        out = {}
        for split in splits:
            xs, ys = [], {field: [] for field in self.labels}
            for fname in self.files[split]:
                where = tree.where(fname)
                d = load_pickle(tree.read(fname), where)
                x = decode_batch(d, where)
                for field, (key, _) in self.labels.items():
                    y = check_labels(np.asarray(_key(d, key, where)), name=where, what=f"{key!r}",
                                     num_classes=len(names[field]))
                    if len(y) != len(x):
                        raise SourceError(f"{where}: {len(x)} images but {len(y)} {key!r}")
                    ys[field].append(y)
                xs.append(x)
            x = np.concatenate(xs)
            y = {f: np.concatenate(v) for f, v in ys.items()}
            check_arrays(x, y["label"], name=tree.where(self.files[split][0]), num_classes=len(names["label"]))
            sources = tree.take_records()
            if tree.kind == "folder":
                sources = meta_record + sources
            else:
                sources[0]["members"] = meta_record[0]["members"] + sources[0]["members"]
            extra = {f: v for f, v in y.items() if f != "label"}
            out[split] = Split(x, y["label"], sources, len(names["label"]), names["label"], extra_labels=extra,
                               extra_label_info={f: {"num_classes": len(names[f]), "names": names[f]} for f in extra})
        return out

    def build(self, out_dir, splits=("train", "test"), src=None, download: bool = False,
              progress: bool = True, **opts) -> dict[str, Path]:
        """opts: encoding, jpeg_quality, num_workers (see write_arrays)."""
        splits = check_splits(splits)
        if download:
            dest = Path(src) if src else paths.data_root()
            dest = dest.parent if dest.suffix == ".gz" else dest
            src = dl.download([self.archive], dest, progress=progress)[0]
        src = pick_src(src, self.default_src(), self.NAME, place_hint([self.archive], paths.data_root()))
        return write_splits(self.NAME, out_dir, self.load(src, splits), progress=progress, **opts)


CIFAR10 = CifarDataset(
    NAME="cifar10",
    folder="cifar-10-batches-py",
    archive=Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                   "c58f30108f718f92721af3b95e74349a"),
    meta="batches.meta",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    labels={"label": ("labels", "label_names")},
)

CIFAR100 = CifarDataset(
    NAME="cifar100",
    folder="cifar-100-python",
    archive=Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                   "eb9058c3a382ffc7106e4002c42a8d85"),
    meta="meta",
    files={"train": ("train",), "test": ("test",)},
    labels={"label": ("fine_labels", "fine_label_names"), "coarse_label": ("coarse_labels", "coarse_label_names")},
)
