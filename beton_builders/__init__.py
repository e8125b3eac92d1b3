"""Raw dataset files -> deterministic .beton files with manifests.

Never imports a model: this stage stands on its own.
"""
from __future__ import annotations

from pathlib import Path

from lmc import paths


def ensure(dataset: str, root=None, src=None, splits=("train", "test")) -> dict[str, Path]:
    """The .beton of each split, built first when missing (or when its manifest is missing),
    under the dataset folder's lock: concurrent callers build it once, and temporary files that
    a killed build left behind are removed first."""
    from beton_builders.registry import get
    from lmc.io import exclusive_lock, remove_stale_tmp

    wanted = {s: paths.beton_path(dataset, s, root) for s in splits}

    def missing() -> list[str]:
        return [s for s, p in wanted.items() if not (p.exists() and paths.manifest_path(p).exists())]

    if missing():
        folder = paths.beton_dir(dataset, root)
        with exclusive_lock(paths.lock_path(folder)):
            remove_stale_tmp(folder)
            if missing():
                get(dataset).build(folder, splits=tuple(missing()), src=src)
    return wanted
