"""Where a result came from: git revision, library versions, machine, numerics profile."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess

from lmc.paths import REPO_ROOT

_PACKAGES = ("torch", "ffcv", "numba", "numpy", "pandas", "seaborn")
_SIMD_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "amx")


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


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model, vendor and SIMD flags (Linux: /proc/cpuinfo; elsewhere what platform knows)."""
    info = {"model": platform.processor() or platform.machine(), "vendor": "unknown", "simd_flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["model"] = fields.get("model name", info["model"])
    info["vendor"] = fields.get("vendor_id", "unknown")
    info["simd_flags"] = sorted(f for f in fields.get("flags", "").split() if f.startswith(_SIMD_PREFIXES))
    return info


def machine() -> dict:
    """The host, with what decides CPU arithmetic: CPU model and SIMD flags, C library."""
    import os

    libc, libc_version = platform.libc_ver()
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": str(os.cpu_count()),
            "cpu": cpu_info(), "libc": f"{libc} {libc_version}".strip()}


def provenance(**extra) -> dict:
    """The record every result carries; a process that computes passes its numerics profile
    (``numerics=lmc.numerics.profile()``) among ``extra``. Never imports torch, so the analysis
    stage can call it too."""
    return {"git_revision": git_revision(), "versions": versions(), "machine": machine(), **extra}
