"""lmc.io: checksummed files, stale temporary files, a full disk, JSON lines and lock files;
and the command line's clean failures (one line, exit 2, nothing left behind)."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmc import paths
from lmc.io import (DamagedFileError, DiskFullError, append_jsonl, atomic_path, atomic_write_text,
                    read_checked, read_jsonl, remove_free_lock, remove_stale_tmp, repair_jsonl, try_lock,
                    verify_checked, write_checked)


def lmc(*argv: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A small tmpfs at ``folder``: a real full disk. Skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or 'mount failed'}); "
                    f"the patched-ENOSPC tests still cover the code paths")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until about ``leave`` bytes remain."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


# -- checksummed files ----------------------------------------------------------------------------

def test_checked_file_round_trip_and_every_kind_of_damage(tmp_path):
    import torch

    state = {"w": torch.arange(1000, dtype=torch.float32), "step": 7}
    path = tmp_path / "ckpt.pt"
    digest = write_checked(path, lambda tmp: torch.save(state, tmp))
    assert len(digest) == 64 and not list(tmp_path.glob(".*.tmp"))
    loaded = torch.load(io.BytesIO(read_checked(path)))
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 7
    assert verify_checked(path) == path.stat().st_size - 48
    # Readers that know nothing of the trailer still read the file (torch's zip reader).
    assert torch.equal(torch.load(path)["w"], state["w"])

    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10
    path.write_bytes(bytes(flipped))
    for check in (read_checked, verify_checked):
        with pytest.raises(DamagedFileError, match="sha256 differs") as err:
            check(path)
        assert err.value.reason == "mismatch" and str(path) in str(err.value)
    path.write_bytes(good[:-100])
    with pytest.raises(DamagedFileError) as err:
        read_checked(path)
    assert err.value.reason in ("truncated", "unchecked") and "\n" not in str(err.value)
    path.write_bytes(good[:20])
    with pytest.raises(DamagedFileError, match="truncated") as err:
        verify_checked(path)
    assert err.value.reason == "truncated"
    torch.save(state, path)  # a plain torch.save: no trailer
    with pytest.raises(DamagedFileError, match="no checksum trailer") as err:
        read_checked(path)
    assert err.value.reason == "unchecked"


# -- stale temporary files ---------------------------------------------------------------------

def test_remove_stale_tmp_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "run" / "checkpoints" / "epoch_0001.pt"
    code = ("import os, signal, sys\nfrom lmc.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=paths.REPO_ROOT)
    assert proc.returncode == -signal.SIGKILL
    left = list((tmp_path / "run").rglob(".*.tmp"))
    assert len(left) == 1 and not target.exists()
    keep = [tmp_path / "run" / ".hidden", tmp_path / "run" / "notes.tmp", tmp_path / "run" / ".x.tmp"]
    for k in keep:
        k.write_text("mine")
    assert remove_stale_tmp(tmp_path / "run") == left
    assert all(k.exists() for k in keep) and not list((tmp_path / "run").rglob(".*.*.tmp"))
    assert remove_stale_tmp(tmp_path / "absent") == []


# -- a full disk -----------------------------------------------------------------------------------

def test_disk_full_on_a_real_tmpfs(tmp_path):
    import torch

    with tmpfs(tmp_path / "disk", "1m") as disk:
        old = disk / "metrics.json"
        atomic_write_text(old, "old\n")
        with pytest.raises(DiskFullError) as err:
            atomic_write_text(old, "x" * 3_000_000)
        message = str(err.value)
        assert "no space left on device" in message and str(old) in message and "3,000,000 bytes" in message
        assert old.read_text() == "old\n" and sorted(p.name for p in disk.iterdir()) == ["metrics.json"]
        # torch's writer reports a full disk without its errno; it is recognised all the same.
        with pytest.raises(DiskFullError, match="no space left on device") as err:
            write_checked(disk / "ckpt.pt", lambda tmp: torch.save({"w": torch.zeros(1_000_000)}, tmp))
        assert "bytes written before it filled" in str(err.value)
        assert sorted(p.name for p in disk.iterdir()) == ["metrics.json"]
        # An append that does not fit leaves no half line behind.
        rows = disk / "rows.jsonl"
        append_jsonl(rows, {"epoch": 1})
        fill(disk, 0)
        with pytest.raises(DiskFullError):
            append_jsonl(rows, {"epoch": 2, "pad": "y" * 100_000})
        assert read_jsonl(rows) == [{"epoch": 1}]


def test_disk_full_simulated(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: ENOSPC raised by the writer itself."""
    def writer(tmp: Path):
        tmp.write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(DiskFullError, match=r"1,000 bytes written before it filled") as err:
        with atomic_path(tmp_path / "a.bin") as tmp:
            writer(tmp)
    assert str(tmp_path / "a.bin") in str(err.value) and not list(tmp_path.iterdir())
    with pytest.raises(DiskFullError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(PermissionError):  # other errors pass through unchanged
        with atomic_path(tmp_path / "c.bin") as tmp:
            raise PermissionError(errno.EACCES, "Permission denied")
    assert not list(tmp_path.iterdir())


# -- JSON lines and lock files ---------------------------------------------------------------------

def test_half_a_jsonl_line_is_reported_in_one_line_and_repaired(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in (1, 2):
        append_jsonl(path, {"epoch": epoch})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "te')
    with pytest.raises(DamagedFileError, match="line 3 is not JSON") as err:
        read_jsonl(path)
    assert "\n" not in str(err.value)
    assert repair_jsonl(path) == len('{"epoch": 3, "te')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}] and repair_jsonl(path) == 0


def test_a_lock_file_is_removed_only_when_free_and_a_late_taker_sees_the_new_one(tmp_path):
    lock = tmp_path / ".locks" / "run.lock"
    with try_lock(lock) as held:
        assert held and not remove_free_lock(lock) and lock.exists()
    assert remove_free_lock(lock) and not lock.exists()
    # A taker that opened the file before it was removed must not lock a file nobody else sees.
    lock.touch()
    stale = open(lock, "a")
    lock.unlink()
    with try_lock(lock) as held:
        assert held and lock.exists()
        import fcntl

        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode is free: nobody holds it
    stale.close()


# -- the command line --------------------------------------------------------------------------------

def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    """``lmc`` in this process (no start-up cost): exit code and stderr lines."""
    from app.cli import main

    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_results_pointing_at_a_file_is_one_line(tmp_path, capsys, monkeypatch, where):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    root = afile if where == "file" else afile / "sub"
    for argv in (("train", "--epochs", "1"), ("reproduce", "table2"), ("demo",), ("report",)):
        rc, err = run_main(capsys, *argv, "--results", str(root))
        assert rc == 2 and len(err) == 1, err
        assert "not a folder" in err[0] and str(root) in err[0]
    monkeypatch.setenv("LMC_RESULTS", str(root))
    rc, err = run_main(capsys, "report")
    assert rc == 2 and "LMC_RESULTS" in err[0]
    assert afile.read_text() == "not a folder"


def test_a_failed_first_command_leaves_a_new_root_as_it_found_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMC_DATA_ROOT", str(tmp_path / "no-data"))
    absent, empty = tmp_path / "absent", tmp_path / "empty"
    empty.mkdir()
    for root in (absent, empty):
        for argv in (("train", "--dataset", "cifar10", "--epochs", "1"), ("reproduce", "figure3"),
                     ("train-pair", "--dataset", "cifar10", "--epochs", "1")):
            rc, err = run_main(capsys, *argv, "--results", str(root))
            assert rc == 2 and len(err) == 1, err
            assert (not root.exists()) if root == absent else not list(root.iterdir()), list(root.rglob("*"))


def test_a_full_disk_while_training_is_one_line_and_the_rerun_finishes(tmp_path, mnist_small):
    with tmpfs(tmp_path / "disk", "12m") as disk:
        root = disk / "results"
        shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
        argv = ("train", "--dataset", "mnist_small", "--model", "mlp", "--depth", "2", "--width", "32",
                "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--device", "cpu", "--quiet",
                "--results", str(root))
        filler = fill(disk, 60_000)  # room for config, metrics and provenance, not for a checkpoint
        proc = lmc(*argv)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "no space left on device" in proc.stderr and str(root) in proc.stderr
        assert not list(root.rglob(".*.tmp"))
        filler.unlink()
        proc = lmc(*argv)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run = next(paths.runs_dir(root).iterdir())
        assert (run / paths.DONE).exists()
        assert [r["epoch"] for r in read_jsonl(run / paths.METRICS)] == [1, 2]


# -- fault injection (scripts/fault_inject.py) ------------------------------------------------------

@pytest.mark.slow
def test_fault_injection_short(tmp_path, request):
    """Two SIGKILLs (seed 3: after the first metrics append, during the final.pt write), reruns, checks.
    About a minute on an idle 2-core CPU: run with LMC_SLOW=1 or `-m slow`."""
    if not (os.environ.get("LMC_SLOW") == "1" or "slow" in (request.config.getoption("-m") or "")):
        pytest.skip("slow (about 1 min): set LMC_SLOW=1 or pass -m slow; or run scripts/fault_inject.py")
    proc = subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "fault_inject.py"), "--mode", "train",
                           "--kills", "2", "--seed", "3", "--epochs", "2", "--strategies", "metrics,tmp",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("train: ") and "of 2 held" in summary, proc.stdout + proc.stderr[-2000:]
    assert "weights 2/2" in summary and "metrics 2/2" in summary and "rerun 2/2" in summary, proc.stdout
    # Stale temporary files are removed by the trainer of experiments/training/ (under the run's
    # lock); the trainer before it leaves them, so only then is a leftover a failure.
    if (paths.REPO_ROOT / "experiments" / "training").is_dir():
        assert proc.returncode == 0 and "leftovers 2/2" in summary, proc.stdout


def test_a_killed_builds_shared_memory_is_freed_by_the_next_build_and_only_its(tmp_path):
    """FFCV's writer keeps its metadata in /dev/shm; a SIGKILLed build leaves the block behind.
    Ours carry their process id, so a later build frees those of dead processes only."""
    import subprocess
    import sys

    from beton_builders.writer import SHM_DIR, SHM_PREFIX, remove_orphaned_shm

    if not SHM_DIR.is_dir():
        pytest.skip("no /dev/shm on this system")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = SHM_DIR / f"{SHM_PREFIX}{dead}-0badf00d"
    live = SHM_DIR / f"{SHM_PREFIX}{os.getpid()}-0badf00d"
    foreign = SHM_DIR / f"psm_{dead}_not_ours"
    for block in (orphan, live, foreign):
        block.write_bytes(b"\0" * 64)
    try:
        assert remove_orphaned_shm() == [orphan.name]
        assert not orphan.exists() and live.exists() and foreign.exists()
    finally:
        for block in (orphan, live, foreign):
            block.unlink(missing_ok=True)
