"""What every builder shares: a loaded split, and writing all splits once all are read.

Readers load and validate *every* requested split before the first byte is written, so bad
input anywhere (a truncated test file, an unknown class in the annotations) leaves no output
at all, not a train .beton without its test partner.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from beton_builders.writer import write_arrays
from lmc import paths

SPLITS = ("train", "test")


@dataclass
class Split:
    """One split as read from its source files, ready for :func:`write_arrays`."""
    x: np.ndarray
    y: np.ndarray
    sources: list[dict]
    num_classes: int
    label_names: list[str] | None = None
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)
    extra_label_info: dict[str, dict] = field(default_factory=dict)
    note: str = ""
    extra: dict = field(default_factory=dict)


def check_splits(splits) -> tuple[str, ...]:
    from lmc.manifest import ManifestError

    splits = tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ManifestError(f"unknown split(s) {bad or splits}; expected some of {SPLITS}")
    return splits


def write_splits(dataset: str, out_dir, loaded: dict[str, Split], *, encoding: str = "raw",
                 jpeg_quality: int = 90, progress: bool = True, num_workers: int = 1) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.beton`` + manifest for each loaded split; return the paths."""
    out = {}
    for split, s in loaded.items():
        beton = paths.split_file(out_dir, split, ".beton")
        t0 = time.perf_counter()
        write_arrays(s.x, s.y, beton, dataset=dataset, split=split, sources=s.sources,
                     num_classes=s.num_classes, label_names=s.label_names, extra_labels=s.extra_labels,
                     extra_label_info=s.extra_label_info, encoding=encoding, jpeg_quality=jpeg_quality,
                     num_workers=num_workers, source_note=s.note, extra=s.extra, progress=progress)
        out[split] = beton
        if progress:
            import sys

            print(f"[beton] {dataset}/{split}: {len(s.x)} images -> {beton} "
                  f"({time.perf_counter() - t0:.1f} s to write)", file=sys.stderr)
    return out
