"""`lmc demo`: the study's main job on the embedded default data (filled in below)."""
from __future__ import annotations


def register(sub) -> None:
    pass
