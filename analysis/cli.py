"""`lmc` subcommands of the analysis stage."""
from __future__ import annotations


def register(sub) -> None:
    """Add this stage's subcommands to the `lmc` parser."""
