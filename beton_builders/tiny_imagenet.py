"""Tiny-ImageNet-200 from its folder or its zip (``tiny-imagenet-200.zip``; a tar of the same
folder works too).

Layout: ``wnids.txt`` (200 WordNet ids; class index = line position),
``train/<wnid>/images/*.JPEG`` (500 per class) and ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (``file <TAB> wnid <TAB> box``). The official test split has no
labels, so our **test split is the official val split** (10,000 images, 50 per class).

Order: train = classes in wnids.txt order, files in natural order (``n01443537_2`` before
``n01443537_10``); test = the order of val_annotations.txt. Images are decoded once, with
OpenCV's libjpeg-turbo (integer IDCT, so the pixels do not depend on the CPU), and stored raw
as 64x64x3 uint8; the 168 greyscale val images (and their train counterparts) become RGB by
repeating the grey channel, as PIL's ``convert("RGB")`` does. Pillow decodes all 10,000 val
images to the same pixels (checked in tests/test_beton_tiny_imagenet.py).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from beton_builders import download as dl
from beton_builders.base import Split, check_splits, write_splits
from beton_builders.download import Remote, place_hint
from beton_builders.sources import SourceError
from beton_builders.sources import SourceTree, pick_src
from beton_builders.writer import check_arrays
from lmc import paths

NAME = "tiny_imagenet"
SIZE = 64
ARCHIVE = Remote("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                 "90528d7ca1a48142e341f4ef8d21d0de")
WHAT = "Tiny-ImageNet-200 (the tiny-imagenet-200/ folder or tiny-imagenet-200.zip)"


def default_src() -> list[Path]:
    root = paths.data_root()
    # The last one is the val-only tar kept beside this project for tests and benchmarks.
    return [root / "tiny-imagenet-200", root / "tiny-imagenet-200.zip", root / "tiny-imagenet-200-val.tar"]


def decode_jpeg(data: bytes, where: str) -> tuple[np.ndarray, bool]:
    """(64x64x3 RGB uint8, was it greyscale) for one JPEG file."""
    import cv2

    # IMREAD_UNCHANGED: no EXIF rotation and no colour conversion we did not ask for.
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SourceError(f"{where}: not a decodable JPEG")
    grey = img.ndim == 2
    if img.shape[:2] != (SIZE, SIZE) or not (grey or img.shape[2] == 3) or img.dtype != np.uint8:
        raise SourceError(f"{where}: image is {img.dtype} {img.shape}, expected {SIZE}x{SIZE} grey or colour")
    rgb = np.repeat(img[:, :, None], 3, axis=2) if grey else img[:, :, ::-1]
    return rgb, grey


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_wnids(tree: SourceTree) -> list[str]:
    wnids = tree.read("wnids.txt").decode("utf-8").split()
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if not wnids or dup:
        raise SourceError(f"{tree.where('wnids.txt')}: {'duplicate ids ' + str(dup) if dup else 'empty'}")
    return wnids


def read_words(tree: SourceTree, wnids: list[str]) -> list[str] | None:
    """Human-readable class names from words.txt, when it is there (it is optional for us)."""
    if not tree.exists("words.txt"):
        return None
    words = dict(line.split("\t", 1) for line in tree.read("words.txt").decode("utf-8").splitlines() if "\t" in line)
    return [words.get(w, "").strip() for w in wnids]


def _train_files(tree: SourceTree, wnids: list[str]) -> list[tuple[str, int]]:
    unknown = sorted(set(tree.subdirs("train")) - set(wnids))
    if unknown:
        raise SourceError(f"{tree.where('train')}: class folder(s) {unknown[:5]} are not in wnids.txt")
    files = []
    for label, wnid in enumerate(wnids):
        folder = f"train/{wnid}/images"
        names = sorted((n for n in tree.listdir(folder) if n.upper().endswith(".JPEG")), key=_natural)
        if not names:
            raise SourceError(f"{tree.where(folder)}: missing or without JPEGs; every class in wnids.txt "
                              f"needs its training images")
        files += [(f"{folder}/{n}", label) for n in names]
    return files


def _val_files(tree: SourceTree, wnids: list[str]) -> list[tuple[str, int]]:
    rel = "val/val_annotations.txt"
    index = {w: i for i, w in enumerate(wnids)}
    files = []
    for lineno, line in enumerate(tree.read(rel).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise SourceError(f"{tree.where(rel)} line {lineno}: expected 'file<TAB>wnid<TAB>box', got {line!r}")
        if parts[1] not in index:
            raise SourceError(f"{tree.where(rel)} line {lineno}: class {parts[1]!r} (for {parts[0]}) is not "
                              f"in wnids.txt")
        files.append((f"val/images/{parts[0]}", index[parts[1]]))
    if not files:
        raise SourceError(f"{tree.where(rel)}: no annotations")
    return files


def load(src: Path, splits, progress: bool = True) -> dict[str, Split]:
    import cv2
    from tqdm import tqdm

    tree = SourceTree(src, "wnids.txt", WHAT)
    wnids = read_wnids(tree)
    words = read_words(tree, wnids)
    common = tree.take_records()
    out = {}
    for split in splits:
        if split == "train" and not tree.subdirs("train"):
            raise SourceError(f"{tree.where('train')}: no training images in {src} (the val-only copy?); "
                              f"build --split test, or point --src at the full dataset")
        files = _train_files(tree, wnids) if split == "train" else _val_files(tree, wnids)
        x = np.empty((len(files), SIZE, SIZE, 3), np.uint8)
        y = np.fromiter((label for _, label in files), np.int64, len(files))
        grey = 0
        for i, (rel, _) in enumerate(tqdm(files, desc=f"decode {NAME}/{split}", unit="img", disable=not progress)):
            x[i], was_grey = decode_jpeg(tree.read(rel), tree.where(rel))
            grey += was_grey
        check_arrays(x, y, name=tree.where(rel), num_classes=len(wnids))
        sources = tree.take_records()
        if tree.kind == "folder":
            sources = common + sources
        else:
            sources[0]["members"] = common[0]["members"] + sources[0]["members"]
        note = "official val split (the official test split has no labels)" if split == "test" else ""
        out[split] = Split(x, y, sources, len(wnids), wnids, note=note,
                           extra={"class_words": words, "greyscale_to_rgb": grey,
                                  "jpeg_decoder": f"OpenCV {cv2.__version__} imdecode (IMREAD_UNCHANGED)"})
    return out


def build(out_dir, splits=("train", "test"), src=None, download: bool = False, progress: bool = True,
          **opts) -> dict[str, Path]:
    """opts: encoding, jpeg_quality, num_workers (see write_arrays)."""
    splits = check_splits(splits)
    if download:
        dest = Path(src) if src else paths.data_root()
        dest = dest.parent if dest.suffix == ".zip" else dest
        src = dl.download([ARCHIVE], dest, progress=progress)[0]
    src = pick_src(src, default_src(), NAME, place_hint([ARCHIVE], paths.data_root()))
    return write_splits(NAME, out_dir, load(src, splits, progress), progress=progress, **opts)
