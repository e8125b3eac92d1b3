"""Any labelled image array: the generic path for a user's own data.

``--src`` is one of

* a ``.npz`` with ``x`` and ``y`` (one split: the one named by ``--split``, ``train`` for
  ``all``) or with ``x_train``/``y_train`` and/or ``x_test``/``y_test`` (``--split all``:
  every split it holds);
* a folder holding the same names as ``.npy`` files (``x.npy`` + ``y.npy``, or
  ``x_train.npy`` + ``y_train.npy`` ...);
* an ``x*.npy`` file whose labels sit beside it under the same name with ``x`` -> ``y``.

``x`` is uint8, N x H x W (grey) or N x H x W x C with C in (1, 3); ``y`` holds N non-negative
integers. ``num_classes`` defaults to ``max(y) + 1`` over all splits, so train and test agree.
Object arrays are refused (``allow_pickle=False``): a data file cannot run code.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from beton_builders.base import SPLITS, Split, check_splits, write_splits
from beton_builders.sources import SourceError
from beton_builders.sources import file_record
from beton_builders.writer import check_arrays

NAME = "npz"


def default_name(src) -> str:
    """The dataset name for a user's file: its stem, reduced to a safe folder name."""
    stem = Path(src).name.split(".")[0] if Path(src).is_file() else Path(src).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or NAME


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise SourceError(f"{path}: not a plain numeric .npy ({exc})") from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: unreadable or truncated .npy ({exc})") from None


def _arrays(src: Path) -> tuple[dict, dict[str, list[dict]]]:
    """name -> lazy array getter, and name -> source records, for the three layouts."""
    if src.is_dir():
        files = {p.stem: p for p in sorted(src.glob("*.npy"))}
        return ({k: (lambda p=p: _load_npy(p)) for k, p in files.items()},
                {k: [file_record(p)] for k, p in files.items()})
    if src.suffix == ".npy":
        if not src.stem.startswith("x"):
            raise SourceError(f"{src}: a single .npy must be the images, named x*.npy, with its labels "
                              f"beside it as y*.npy; or pass an .npz with x and y")
        ypath = src.with_name("y" + src.name[1:])
        if not ypath.exists():
            raise SourceError(f"{src}: its labels {ypath.name} are not beside it")
        split = src.stem[2:] if src.stem.startswith("x_") else ""
        names = (f"x_{split}", f"y_{split}") if split else ("x", "y")
        return ({names[0]: lambda: _load_npy(src), names[1]: lambda: _load_npy(ypath)},
                {names[0]: [file_record(src)], names[1]: [file_record(ypath)]})
    try:
        npz = np.load(src, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{src}: not a readable .npz/.npy ({type(exc).__name__}: {exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SourceError(f"{src}: holds one array; expected an .npz with x and y (or x_train/y_train ...)")

    def get(key):
        try:
            return npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{src}: array {key!r} is unreadable ({type(exc).__name__}: {exc})") from None

    record = [file_record(src)]
    return {k: (lambda k=k: get(k)) for k in npz.files}, {k: record for k in npz.files}


def load(src: Path, splits, num_classes: int | None = None, label_names=None) -> dict[str, Split]:
    """One split asked for: exactly that one. Both (``--split all``): every split the file holds."""
    arrays, records = _arrays(src)
    one = splits[0] if len(splits) == 1 else None
    per_split = {s: (f"x_{s}", f"y_{s}") for s in SPLITS if f"x_{s}" in arrays or f"y_{s}" in arrays}
    if per_split:
        if one and one not in per_split:
            raise SourceError(f"{src}: no x_{one}/y_{one}; it holds {sorted(arrays)}")
        wanted = {one: per_split[one]} if one else per_split
    elif "x" in arrays or "y" in arrays:
        wanted = {(one or "train"): ("x", "y")}
    else:
        raise SourceError(f"{src}: no 'x' and 'y' arrays (nor x_train/y_train, x_test/y_test); it holds "
                          f"{sorted(arrays)}. Save images as x (uint8 N×H×W[×C]) and labels as y (integers)")
    loaded = {}
    for split, (xk, yk) in wanted.items():
        for k in (xk, yk):
            if k not in arrays:
                raise SourceError(f"{src}: has {xk if k == yk else yk} but no {k!r}; it holds {sorted(arrays)}")
        x, y = arrays[xk](), arrays[yk]()
        check_arrays(x, y, name=f"{src}[{xk!r}, {yk!r}]", num_classes=num_classes)
        loaded[split] = (x, y, sorted({r["path"]: r for k in (xk, yk) for r in records[k]}.values(),
                                      key=lambda r: r["path"]))
    k = num_classes or max(int(np.max(y)) for _, y, _ in loaded.values()) + 1
    if label_names is not None and len(label_names) != k:
        raise SourceError(f"{len(label_names)} label names given for {k} classes")
    return {s: Split(x, y, recs, k, list(label_names) if label_names else None,
                     note=f"user arrays {Path(src).name}") for s, (x, y, recs) in loaded.items()}


def build(out_dir, splits=("train", "test"), src=None, name: str | None = None, num_classes: int | None = None,
          label_names=None, download: bool = False, progress: bool = True, **opts) -> dict[str, Path]:
    """opts: encoding, jpeg_quality, num_workers (see write_arrays)."""
    if download:
        raise SourceError("--download does not apply to npz: the arrays are your own files")
    if src is None:
        raise SourceError("the npz builder needs --src: an .npz with x and y, or a folder of .npy files")
    src = Path(src).expanduser()
    if not src.exists():
        raise SourceError(f"{src}: no such file or folder")
    splits = check_splits(splits)
    return write_splits(name or default_name(src), out_dir, load(src, splits, num_classes, label_names),
                        progress=progress, **opts)
