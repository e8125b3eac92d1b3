"""Where a result came from: git revision, library versions, machine, numerics profile."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess

from lmc.paths import REPO_ROOT

_PACKAGES = ("torch", "ffcv", "numba", "numpy", "pandas", "seaborn")


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """The commit of this checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> dict:
    """The host, with what decides CPU arithmetic: CPU model and SIMD flags, C library."""
    import os

    from lmc.numerics import cpu_info

    libc, libc_version = platform.libc_ver()
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": str(os.cpu_count()),
            "cpu": cpu_info(), "libc": f"{libc} {libc_version}".strip()}


def provenance(**extra) -> dict:
    """Call it from a process that computes with torch: it records the numerics profile in effect."""
    from lmc.numerics import profile

    return {"git_revision": git_revision(), "versions": versions(), "machine": machine(),
            "numerics": profile(), **extra}
