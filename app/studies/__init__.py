"""Studies: artefacts that are more than a grid of pairs (``lmc reproduce <name>``).

A grid (``experiments/grids/*.toml``) trains independent pairs; a study chains stages, e.g.
pretraining, then fine-tuning pairs from the pretrained weights, then pruning and retraining
under the pruned mask. One module per study in this folder, found by name; each defines

    TITLE: str                          the artefact's one-line title
    SCALES: dict[str, str]              scale name ("quick", "paper") -> what it changes and why
    def run(args, out: Path) -> int     train what is missing, write tables and figures under
                                        ``out`` (= ``lmc.paths.sweep_dir(name, scale)``) and the
                                        summary ``lmc report`` reads; return the exit code
    def check(args) -> None             optional: raise a UserError for input that cannot work
                                        (a missing checkpoint or dataset), before anything is written

``args`` are ``lmc reproduce``'s (``scale``, ``seeds``, ``jobs``, ``device``, ``results``, ...).
Every run a study trains is an ordinary run (hash-named, resumable), so a rerun resumes.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")
