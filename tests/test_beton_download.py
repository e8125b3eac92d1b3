"""`--download` without the internet: a local HTTP server and an unreachable address stand in."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading

import pytest

from beton_builders import registry
from beton_builders.download import Remote, download
from beton_builders.sources import SourceError
from beton_builders.mnist import MNIST
from beton_fixtures import listing

# Nothing listens on port 9 (discard) here: connecting is refused at once, like a machine
# without a network route; no test reaches the internet.
UNREACHABLE = "http://127.0.0.1:9/"


@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_offline_fails_fast_naming_files_and_folder(tmp_path):
    remotes = [Remote(UNREACHABLE + "a.gz", "a.gz"), Remote(UNREACHABLE + "b.gz", "b.gz")]
    with pytest.raises(SourceError) as err:
        download(remotes, tmp_path / "dest", timeout=2, progress=False)
    msg = str(err.value)
    assert "no network?" in msg and f"{tmp_path / 'dest' / 'a.gz'}" in msg and f"{tmp_path / 'dest' / 'b.gz'}" in msg
    assert "\n" not in msg
    assert listing(tmp_path / "dest") == []


def test_download_checks_md5_and_keeps_nothing_partial(local_server, tmp_path):
    served, url = local_server
    (served / "good.bin").write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(b"payload" * 1000).hexdigest()
    (got,) = download([Remote(url + "good.bin", "good.bin", md5)], tmp_path / "dest", progress=False)
    assert got.read_bytes() == b"payload" * 1000
    with pytest.raises(SourceError, match="MD5 .* differs from the published"):
        download([Remote(url + "good.bin", "other.bin", "0" * 32)], tmp_path / "dest", progress=False)
    assert listing(tmp_path / "dest") == ["good.bin"]
    with pytest.raises(SourceError, match="cannot download"):  # 404
        download([Remote(url + "absent.bin", "absent.bin")], tmp_path / "dest", progress=False)
    assert listing(tmp_path / "dest") == ["good.bin"]


def test_cli_download_offline_exits_2(tmp_path, monkeypatch, capsys):
    from app.cli import main

    offline = dataclasses.replace(MNIST, base_url=UNREACHABLE)
    monkeypatch.setitem(registry.DATASETS, "mnist", (offline, "MNIST, pointed at an unreachable host"))
    rc = main(["beton", "build", "mnist", "--download", "--src", str(tmp_path / "mnist"), "--out",
               str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "train-images-idx3-ubyte.gz" in err[0] and str(tmp_path / "mnist") in err[0]
    assert listing(tmp_path / "mnist") == [] and listing(tmp_path / "out") == []


def test_missing_source_says_where_to_put_what(tmp_path, monkeypatch):
    monkeypatch.setenv("LMC_DATA_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(SourceError) as err:
        MNIST.build(tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "no mnist source found" in msg and "train-images-idx3-ubyte.gz" in msg and "--download" in msg
