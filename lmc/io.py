"""Atomic file writes, checksummed files, JSON lines and locks.

Writes go to a temporary file beside the target, then a rename: a rename within one folder is
atomic on POSIX, so an interrupted stage never leaves a file that looks complete (readers see
the old file, the new one, or none). A full disk is reported as :class:`DiskFullError` (one
line: the path, the bytes written before it filled, what to do) with the temporary file gone.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from lmc.errors import UserError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch's C++ writer drops the errno ("unexpected pos 576 vs 534"); a failed write with less
# than this left on the file system is taken as a full disk.
_FULL_MARGIN = 1 << 20


class DiskFullError(UserError):
    """No space (or quota) left while writing a file; nothing half-written remains."""


class DamagedFileError(UserError):
    """A file that fails its integrity check. ``reason``: truncated, mismatch, unchecked, syntax."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, folder: str | os.PathLike) -> bool:
    """True when ``exc`` (or an exception it chains) is ENOSPC/EDQUOT, or when a write failed
    with the file system at ``folder`` all but full (torch's writer loses the errno)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, (OSError, RuntimeError)):
        free = _free_bytes(Path(folder))
        return free is not None and free < _FULL_MARGIN
    return False


def disk_full_error(path: str | os.PathLike, written: int | None = None, needed: int | None = None) -> DiskFullError:
    """The one-line message for a write to ``path`` that ran out of space."""
    path = Path(path)
    folder = path.parent if path.parent.exists() else Path(path.anchor or ".")
    if written is not None and needed is not None:
        sizes = [f"{written:,} of {needed:,} bytes written"]
    elif written is not None:
        sizes = [f"{written:,} bytes written before it filled"]
    else:
        sizes = [f"{needed:,} bytes needed"] if needed is not None else []
    free = _free_bytes(folder)
    where = _mount_point(folder)
    detail = f" ({'; '.join(sizes)})" if sizes else ""
    return DiskFullError(f"no space left on device writing {path}{detail}; {where} has {free or 0:,} bytes free: "
                         f"free space there or move the results (--results DIR or LMC_RESULTS) to a larger "
                         f"disk, then rerun the same command (finished work is kept)")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


class atomic_path:
    """``with atomic_path(path) as tmp:`` yields a temporary path beside ``path``; on success
    it replaces ``path``, on error it is removed.

    A full disk (during the caller's writes or the rename) becomes :class:`DiskFullError`;
    ``needed``, when the caller knows the file's size, goes into its message. (A class rather
    than a generator: a failed writer's frames, where torch keeps its file open, must be
    released before the temporary file is removed, or its space stays taken until exit.)
    """

    def __init__(self, path: str | os.PathLike, *, needed: int | None = None):
        self.path, self.needed, self.tmp = Path(path), needed, None

    def __enter__(self) -> Path:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise disk_full_error(self.path, 0, self.needed) from None
            raise
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        del tb
        if exc is None:
            try:
                os.replace(self.tmp, self.path)
                return False
            except OSError as err:
                if err.errno not in _FULL_ERRNOS:
                    self.tmp.unlink(missing_ok=True)
                    raise
                exc = err
        # Checked before the temporary file is removed and frees its space.
        if not (isinstance(exc, Exception) and is_disk_full(exc, self.path.parent)):
            self.tmp.unlink(missing_ok=True)
            return False
        written = _size(self.tmp)
        chained = exc
        while chained is not None:  # the writer's frames hold its open file: let them go
            chained.__traceback__ = None
            chained = chained.__cause__ or chained.__context__
        del exc, chained
        self.tmp.unlink(missing_ok=True)
        raise disk_full_error(self.path, written, self.needed) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    data = text.encode()
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary file (e.g. ``lambda p: torch.save(obj, p)``), then rename."""
    with atomic_path(path) as tmp:
        writer(tmp)


# -- stale temporary files ------------------------------------------------------------------

# atomic_path's temporary names: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_tmp(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` that a killed process left in
    ``folder`` (and its subfolders); return them.

    Safe ONLY while the caller holds the lock that every writer of ``folder`` holds (a run's
    lock for its run directory): a temporary file is otherwise indistinguishable from one a
    live writer is filling right now, and removing that one makes its rename fail.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for tmp in sorted(found):
        if _TMP_NAME.match(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# -- checksummed files --------------------------------------------------------------------

# A checksummed file is its payload followed by a 48-byte trailer: magic, the payload's sha256,
# the payload's length. An embedded digest rather than a sidecar: one file, one atomic rename,
# so a crash can never pair a file with another version's digest; and a trailer rather than a
# header, so the writer can stream (torch.save) and the digest is appended afterwards. Readers
# that ignore it still work: torch.load (a zip reader that looks for its directory from the end)
# reads a checksummed checkpoint as is.
_MAGIC = b"LMCSHA1\n"
_TRAILER = len(_MAGIC) + 32 + 8


def write_checked(path: str | os.PathLike, writer: Callable[[Path], None]) -> str:
    """Let ``writer`` fill a temporary file, append its sha256 trailer, fsync, rename; return the
    hex digest. ``read_checked`` / ``verify_checked`` check it."""
    with atomic_path(path) as tmp:
        writer(tmp)
        h = hashlib.sha256()
        with open(tmp, "r+b") as f:
            while block := f.read(1 << 20):
                h.update(block)
            length = f.tell()
            f.write(_MAGIC + h.digest() + length.to_bytes(8, "little"))
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the bytes do
    return h.hexdigest()


def _damaged(path: Path, what: str, reason: str) -> DamagedFileError:
    return DamagedFileError(f"{path}: {what}; the file is damaged (an interrupted copy, a full disk or a "
                            f"storage fault): remove it and rerun, or restore it from a copy", reason)


def _check_trailer(path: Path, size: int, trailer: bytes) -> tuple[int, bytes]:
    if size < _TRAILER or trailer[:len(_MAGIC)] != _MAGIC:
        raise _damaged(path, f"no checksum trailer ({size:,} bytes): truncated, or written without one",
                       "unchecked" if size >= _TRAILER else "truncated")
    length = int.from_bytes(trailer[-8:], "little")
    if length != size - _TRAILER:
        raise _damaged(path, f"holds {size - _TRAILER:,} payload bytes, its trailer says {length:,}", "truncated")
    return length, trailer[len(_MAGIC):len(_MAGIC) + 32]


def read_checked(path: str | os.PathLike) -> bytes:
    """The payload of a file written by :func:`write_checked`, after checking its sha256;
    a missing trailer, a length or digest mismatch raises :class:`DamagedFileError` (one line).
    For a torch checkpoint: ``torch.load(io.BytesIO(read_checked(p)))``."""
    path = Path(path)
    data = path.read_bytes()
    length, digest = _check_trailer(path, len(data), data[-_TRAILER:])
    view = memoryview(data)[:length]
    if hashlib.sha256(view).digest() != digest:
        raise _damaged(path, "sha256 differs from the one written with it", "mismatch")
    return bytes(view)


def verify_checked(path: str | os.PathLike) -> int:
    """Like :func:`read_checked`, but streams the file instead of returning it (for files too
    large to hold twice); returns the payload's length. A later ``torch.load(path)`` rereads
    the file, so call it only where nobody else writes it (under the run's lock)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - _TRAILER))
        length, digest = _check_trailer(path, size, f.read())
        f.seek(0)
        h, left = hashlib.sha256(), length
        while left > 0 and (block := f.read(min(left, 1 << 20))):
            h.update(block)
            left -= len(block)
    if h.digest() != digest:
        raise _damaged(path, "sha256 differs from the one written with it", "mismatch")
    return length


# -- JSON lines ------------------------------------------------------------------------------

def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """One JSON object per line; flushed and fsynced so a crash loses at most the line being
    written. A full disk truncates the file back to its old end (no half line) and raises
    :class:`DiskFullError`."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    with open(path, "ab") as f:
        start = f.tell()
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno not in _FULL_ERRNOS:
                raise
            with contextlib.suppress(OSError):
                f.truncate(start)
            raise disk_full_error(path, None, len(line)) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file ([] if it does not exist). A line that is not JSON raises
    :class:`DamagedFileError` naming the file and line (``repair_jsonl`` drops a half last line)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DamagedFileError(f"{path}: line {number} is not JSON ({exc.msg}); a process was killed while "
                                       f"writing it: rerun the command that writes it (it repairs the file) or "
                                       f"delete that line", "syntax") from None
    return rows


def repair_jsonl(path: str | os.PathLike) -> int:
    """Cut a last line that a killed writer left without its newline (and so incomplete);
    return the number of bytes removed. Call it under the lock of whoever appends to ``path``."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- locks ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _flock(path: str | os.PathLike, *, wait: bool) -> Iterator[bool]:
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            yield False
            return
        # remove_free_lock may have unlinked the file between our open and our flock: then we
        # hold a lock nobody else will see; take the lock on the file now at that path instead.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        yield True
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


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


def remove_free_lock(path: str | os.PathLike) -> bool:
    """Delete the lock file ``path`` if no process holds it (True when removed). The unlink
    happens under the lock, and lock takers check that the file they locked is still the one
    at ``path``, so a process that opened the old file retries on the new one."""
    path = Path(path)
    if not path.exists():
        return False
    with try_lock(path) as held:
        if held:
            path.unlink(missing_ok=True)
        return held
