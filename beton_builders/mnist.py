"""MNIST and Fashion-MNIST from their four standard idx files.

``--src`` is the folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, or a
torchvision root (``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw``). Where both the ``.gz``
and the extracted file exist, the extracted one is read (same content, no decompression).
Each source record carries the MD5 of the *uncompressed* idx content and whether it is the
canonical one: gzip bytes differ between mirrors (Debian recompresses), the content does not.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from beton_builders.base import Split, check_splits, write_splits
from beton_builders import download as dl
from beton_builders.download import Remote, place_hint
from beton_builders.idx import gunzip_if_needed, parse_idx
from beton_builders.sources import SourceError
from beton_builders.sources import SourceTree, pick_src
from beton_builders.writer import check_arrays
from lmc import paths

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class IdxDataset:
    """One MNIST-family dataset: its name, classes, where torchvision keeps it, where to get it."""
    NAME: str
    label_names: tuple[str, ...]
    torchvision_folder: str
    base_url: str
    canonical_md5: dict  # stem -> MD5 of the uncompressed idx file
    local_folders: tuple = ()  # default --src candidates besides data_root()/<name>

    def default_src(self) -> list[Path]:
        names = dict.fromkeys([self.NAME, self.NAME.replace("_", "-")])  # ordered, no duplicates
        return [paths.data_root() / n for n in names] + [Path(p) for p in self.local_folders]

    def remotes(self) -> list[Remote]:
        # md5=None: gzip bytes vary by mirror; the uncompressed content is checked instead.
        return [Remote(self.base_url + s + ".gz", s + ".gz") for pair in STEMS.values() for s in pair]

    def _folder(self, src: Path) -> SourceTree:
        names = [s + ext for pair in STEMS.values() for s in pair for ext in ("", ".gz")]
        for folder in (src, src / "raw", src / self.torchvision_folder / "raw"):
            for name in names:
                if (folder / name).is_file():
                    return SourceTree(folder, name, f"the {self.NAME} idx files")
        raise SourceError(f"{src}: none of the {self.NAME} idx files ({', '.join(names[::2])}, "
                          f"gzipped or not) is in it, in raw/ or in {self.torchvision_folder}/raw/")

    def _read(self, tree: SourceTree, stem: str, ndim: int, records: list):
        rel = stem if tree.exists(stem) else stem + ".gz"
        where = tree.where(rel)
        raw = tree.read(rel)
        content = gunzip_if_needed(raw, where)
        array = parse_idx(content, where, ndim)
        record = tree.take_records()[0]
        md5 = hashlib.md5(content).hexdigest()
        records.append({**record, "content_md5": md5, "canonical": md5 == self.canonical_md5.get(stem)})
        return array

    def load(self, src: Path, splits) -> dict[str, Split]:
        tree = self._folder(src)
        out = {}
        for split in splits:
            records: list[dict] = []
            img_stem, lab_stem = STEMS[split]
            x = self._read(tree, img_stem, 3, records)
            y = self._read(tree, lab_stem, 1, records)
            if len(x) != len(y):
                raise SourceError(f"{tree.where(img_stem)} holds {len(x)} images but {tree.where(lab_stem)} "
                                  f"holds {len(y)} labels; the two files are not a pair")
            check_arrays(x, y, name=tree.where(lab_stem), num_classes=len(self.label_names))
            out[split] = Split(x, y, records, len(self.label_names), list(self.label_names))
        return out

    def build(self, out_dir, splits=("train", "test"), src=None, download: bool = False,
              progress: bool = True, **opts) -> dict[str, Path]:
        """opts: encoding, jpeg_quality, num_workers (see write_arrays)."""
        splits = check_splits(splits)
        if download:
            dest = Path(src) if src else self.default_src()[0]
            dl.download(self.remotes(), dest, progress=progress)
            src = dest
        src = pick_src(src, self.default_src(), self.NAME, place_hint(self.remotes(), self.default_src()[0]))
        loaded = self.load(src, splits)
        if download:
            bad = [r["path"] for s in loaded.values() for r in s.sources if not r["canonical"]]
            if bad:
                raise SourceError(f"downloaded {self.NAME} files {bad} differ from the canonical content; "
                                  f"delete them and download again")
        return write_splits(self.NAME, out_dir, loaded, progress=progress, **opts)


MNIST = IdxDataset(
    NAME="mnist",
    label_names=tuple(str(i) for i in range(10)),
    torchvision_folder="MNIST",
    # The original yann.lecun.com host now refuses most downloads; this is PyTorch's mirror of
    # the same files (checked against the canonical content MD5s below).
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    canonical_md5={"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                   "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                   "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                   "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
)

FASHION_MNIST = IdxDataset(
    NAME="fashion_mnist",
    label_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    torchvision_folder="FashionMNIST",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    canonical_md5={"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                   "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                   "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                   "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
    # Debian's package dataset-fashion-mnist (installed by scripts/setup.sh where apt exists).
    local_folders=("/usr/share/datasets/fashion-mnist",),
)
