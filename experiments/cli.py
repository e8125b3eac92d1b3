"""`lmc` subcommands of the experiments stage."""
from __future__ import annotations


def register(sub) -> None:
    """Add this stage's subcommands to the `lmc` parser."""
