"""Atomic file writes: write a temporary file beside the target, then rename.

A rename within one folder is atomic on POSIX, so an interrupted stage never leaves a file
that looks complete: readers see either the old file, the new one, or none.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary file (e.g. ``lambda p: torch.save(obj, p)``), then rename."""
    with atomic_path(path) as tmp:
        writer(tmp)


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """One JSON object per line; flushed and fsynced so a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _flock(path: str | os.PathLike, *, wait: bool) -> Iterator[bool]:
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the duration.

    Several workers sharing one results directory (a local pool, Slurm jobs) take this lock
    around a run, so a config is never trained twice at once. The kernel releases the lock
    when its holder dies, so a crashed worker leaves no stale lock behind. (On NFS, flock
    needs a server with lock support; local and Lustre/GPFS file systems have it.)
    """
    with _flock(path, wait=True):
        yield


def try_lock(path: str | os.PathLike) -> contextlib.AbstractContextManager[bool]:
    """Like :func:`exclusive_lock`, but never waits: yields True holding the lock, or False at
    once when another process holds it (a sweep worker then moves on to other work)."""
    return _flock(path, wait=False)
