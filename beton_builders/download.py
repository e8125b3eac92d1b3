"""``--download``: fetch a dataset's files from its official source, or fail fast saying what
to place where.

Files are streamed to a temporary name beside the target and renamed only after their MD5
(the checksum the datasets' authors publish) matches, so an interrupted or corrupted download
never leaves a file that a later build would trust.
"""
from __future__ import annotations

import hashlib
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from beton_builders.sources import SourceError
from lmc.io import atomic_path

# Short: offline machines should hear "no network" within seconds, not minutes.
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Remote:
    """One official file: where it lives, what to call it locally, its published MD5."""
    url: str
    filename: str
    md5: str | None = None


def _fetch(remote: Remote, dest: Path, timeout: float, progress: bool) -> None:
    from tqdm import tqdm

    with atomic_path(dest) as tmp:
        md5 = hashlib.md5()
        with urllib.request.urlopen(remote.url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {remote.filename}",
                      disable=not progress, file=sys.stderr) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    md5.update(block)
                    bar.update(len(block))
        if remote.md5 and md5.hexdigest() != remote.md5:
            raise SourceError(f"{remote.url}: MD5 {md5.hexdigest()} differs from the published "
                              f"{remote.md5}; the download is corrupt, try again")


def download(remotes: list[Remote], dest_dir: str | Path, *, timeout: float = TIMEOUT_S,
             progress: bool = True) -> list[Path]:
    """Fetch each missing file into ``dest_dir``; return the local paths.

    Offline (or on any network error) this raises a SourceError naming every file to place
    by hand and the folder to put them in; nothing partial is left behind.
    """
    dest_dir = Path(dest_dir)
    out = []
    for remote in remotes:
        dest = dest_dir / remote.filename
        if not dest.exists():
            try:
                _fetch(remote, dest, timeout, progress)
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                wanted = "; ".join(f"{r.url} -> {dest_dir / r.filename}" for r in remotes)
                raise SourceError(f"cannot download {remote.url} ({reason}); no network? Place these files "
                                  f"by hand, then rerun without --download: {wanted}") from None
        out.append(dest)
    return out


def place_hint(remotes: list[Remote], dest_dir: str | Path) -> str:
    """One line telling the user which files to put where."""
    names = ", ".join(r.filename for r in remotes)
    return f"place {names} (from {remotes[0].url.rsplit('/', 1)[0]}/) in {dest_dir}"
