"""A dataset's files as its authors distribute them: a folder, a .zip or a .tar(.gz) of it.

Every reader goes through :class:`SourceTree`, so one code path serves the extracted folder and
the archive as downloaded, and every byte a reader uses is hashed on the way in. The manifest
then lists the sha256 of each source file that split read; large image folders are summarised
by one *tree digest* (see :func:`tree_digest`) instead of 100,000 entries.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from lmc.manifest import ManifestError
from lmc.io import sha256_file

# A folder from which a split reads more files than this is recorded as one tree digest.
TREE_DIGEST_ABOVE = 32

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


class SourceError(ManifestError):
    """A dataset source file that is not in its standard format (truncated, wrong magic, missing
    key, unknown class, label out of range). The message names the file and the problem."""


def file_record(path: str | os.PathLike, name: str | None = None) -> dict:
    """{"path", "bytes", "sha256"} of a file; hashed once per process (archives can be large)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return {"path": name or path.name, "bytes": st.st_size, "sha256": _FILE_HASHES[key]}


def tree_digest(records: Iterable[dict]) -> str:
    """sha256 of the lines ``<sha256>  <path>`` sorted by path: what
    ``find DIR -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`` prints, run in the root."""
    lines = sorted((r["path"], r["sha256"]) for r in records)
    return hashlib.sha256("".join(f"{h}  {p}\n" for p, h in lines).encode()).hexdigest()


def _summarise(records: dict[str, dict]) -> list[dict]:
    """Per-file records, with every folder holding many of them folded into one tree digest."""
    by_dir: dict[str, list[dict]] = {}
    for rec in records.values():
        by_dir.setdefault(str(PurePosixPath(rec["path"]).parent), []).append(rec)
    out = []
    for folder, recs in sorted(by_dir.items()):
        if len(recs) > TREE_DIGEST_ABOVE:
            out.append({"path": f"{folder}/", "files": len(recs), "bytes": sum(r["bytes"] for r in recs),
                        "tree_sha256": tree_digest(recs)})
        else:
            out.extend(sorted(recs, key=lambda r: r["path"]))
    return out


class SourceTree:
    """Read-only view of a distribution's root folder (the one holding ``marker``).

    ``path`` is that folder, a folder containing it, or a .zip / .tar / .tar.gz holding it.
    Paths given to :meth:`read` are POSIX paths relative to the root.
    """

    def __init__(self, path: str | os.PathLike, marker: str, what: str):
        self.path = Path(path)
        self.what = what
        self._members: dict[str, bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        self._read: dict[str, dict] = {}
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder; expected {what}")
        if self.path.is_dir():
            self.kind = "folder"
            hits = [p for p in (self.path, *sorted(self.path.iterdir())) if (p / marker).is_file()]
            if not hits:
                raise SourceError(f"{self.path}: no {marker} in it or in a sub-folder; expected {what}")
            self.root = hits[0]
            return
        if zipfile.is_zipfile(self.path):
            self.kind = "zip"
            self._zip = zipfile.ZipFile(self.path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        elif tarfile.is_tarfile(self.path):
            self.kind = "tar"
            # Read every file once, in archive order: seeking back in a .tar.gz re-decompresses
            # it from the start, so random access would be quadratic.
            self._members = {}
            try:
                with tarfile.open(self.path) as tf:
                    for m in tf:
                        if m.isfile():
                            self._members[m.name.removeprefix("./")] = tf.extractfile(m).read()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise SourceError(f"{self.path}: truncated or corrupt archive ({exc}); download it again") from None
            names = list(self._members)
        else:
            raise SourceError(f"{self.path}: neither a folder nor a .zip/.tar(.gz) archive; expected {what}")
        roots = sorted((n[: -len(marker)] for n in names if n == marker or n.endswith("/" + marker)), key=len)
        if not roots:
            raise SourceError(f"{self.path}: the archive holds no {marker}; expected {what}")
        self.root = roots[0]  # "" or "cifar-10-batches-py/": a prefix inside the archive
        self._names = {n[len(self.root):] for n in names if n.startswith(self.root)}

    def where(self, rel: str) -> str:
        """How error messages name a member: a real path, or ``archive:member``."""
        if self.kind == "folder":
            return str(self.root / rel)
        return f"{self.path}:{self.root}{rel}"

    def exists(self, rel: str) -> bool:
        if self.kind == "folder":
            return (self.root / rel).is_file()
        return rel in self._names

    def listdir(self, rel: str) -> list[str]:
        """Names of the files directly inside folder ``rel``, sorted (file-system order is not)."""
        if self.kind == "folder":
            folder = self.root / rel
            return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        prefix = rel.rstrip("/") + "/"
        return sorted(n[len(prefix):] for n in self._names if n.startswith(prefix) and "/" not in n[len(prefix):])

    def subdirs(self, rel: str) -> list[str]:
        """Names of the folders directly inside folder ``rel``, sorted."""
        if self.kind == "folder":
            folder = self.root / rel
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        prefix = rel.rstrip("/") + "/"
        return sorted({n[len(prefix):].split("/", 1)[0] for n in self._names
                       if n.startswith(prefix) and "/" in n[len(prefix):]})

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise SourceError(f"{self.where(rel)}: missing; expected {self.what}")
        if self.kind == "folder":
            data = (self.root / rel).read_bytes()
        elif self.kind == "zip":
            data = self._zip.read(self.root + rel)
        else:
            data = self._members[self.root + rel]
        self._read[rel] = {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return data

    def take_records(self) -> list[dict]:
        """The manifest's ``sources`` for what was read since the last call (one split)."""
        members = _summarise(self._read)
        self._read = {}
        if self.kind == "folder":
            return members
        return [{**file_record(self.path), "kind": self.kind, "root": self.root, "members": members}]


def pick_src(src, candidates: Iterable[Path], dataset: str, place: str) -> Path:
    """``src`` if given, else the first default candidate that exists; otherwise say where to put what."""
    if src is not None:
        src = Path(src).expanduser()
        if not src.exists():
            raise SourceError(f"{src}: no such file or folder; {place}")
        return src
    candidates = list(candidates)
    for cand in candidates:
        if cand.exists():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise SourceError(f"no {dataset} source found (looked in {tried}); {place}, pass --src PATH, "
                      f"or add --download where a network exists")
