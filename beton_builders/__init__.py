"""Raw dataset files -> deterministic .beton files with manifests.

Never imports a model: this stage stands on its own.
"""
from __future__ import annotations

from pathlib import Path

from lmc import paths


def ensure(dataset: str, root=None, src=None, splits=("train", "test")) -> dict[str, Path]:
    """The .beton of each split, built first when missing (or when its manifest is missing)."""
    from beton_builders.registry import get

    wanted = {s: paths.beton_path(dataset, s, root) for s in splits}
    missing = [s for s, p in wanted.items() if not (p.exists() and paths.manifest_path(p).exists())]
    if missing:
        get(dataset).build(paths.beton_dir(dataset, root), splits=tuple(missing), src=src)
    return wanted
