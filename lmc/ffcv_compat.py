"""Importing and running FFCV 1.0.2 without its side effects on the rest of the process.

Shared by every stage that touches FFCV (beton_builders, pipelines), hence its place in lmc/.

* FFCV sets torch's and numba's thread counts: to 1 when imported, to ``num_workers`` in
  every ``Loader``. ``keep_threads`` restores the calling thread's counts.
* ``ffcv.fields.rgb_image`` fills a ``numba.typed.Dict`` at import time, which makes numba
  compile its typed-dict implementation in every process (5-11 s on a 2-core machine, never
  cached). FFCV only ever reads that dict from Python, so ``import_ffcv`` lets it be a plain
  ``dict`` during the import.
"""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def keep_threads():
    """Restore the calling thread's torch and numba thread counts on exit."""
    import numba
    import torch

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def import_ffcv() -> None:
    """Import FFCV once, fast, leaving thread counts as they were."""
    if "ffcv.loader" in sys.modules:
        return
    import numba.typed

    missing = object()
    saved = vars(numba.typed).get("Dict", missing)  # normally absent: numba.typed loads it lazily
    with keep_threads():
        numba.typed.Dict = dict
        try:
            import ffcv.loader  # noqa: F401  (imports ffcv.fields.rgb_image)
        finally:
            if saved is missing:
                del numba.typed.Dict
            else:
                numba.typed.Dict = saved
