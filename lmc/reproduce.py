"""`lmc reproduce` and `lmc report`: regenerate the paper's tables and figures (filled in by issue 6)."""
from __future__ import annotations


def register(sub) -> None:
    """Add the `reproduce` and `report` subcommands."""
