"""`lmc reproduce --executor slurm` on a real single-node Slurm cluster started on this machine.

``scripts/slurm_local.sh up`` installs Debian's slurm-wlm and munge when missing (root and
apt-get), starts munged, slurmctld and slurmd under a private folder on free ports, and waits
for the node to be idle. Without root, apt or the ability to start the daemons, the test
skips and says why. Set-up and run times are printed (``pytest -s``, or the skip line).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from lmc import paths

SCRIPT = paths.REPO_ROOT / "scripts" / "slurm_local.sh"

GRID = """
artefact = "tiny"
title = "tiny Table 2 on Slurm"
layout = "table2"
axes = ["columns"]

[base]
model = "mlp"
dataset = "mnist_small"
width = 16
batch_size = 64

[scales.quick]
notes = "two epochs on 600 real digits"
config = { epochs = 2 }

[scales.paper]
notes = "unused"
config = { epochs = 3 }

[[columns]]
label = "SGD ↑lr"
optimizer = "sgd"
lr = 0.1

[[columns]]
label = "ADAM ↑lr"
optimizer = "adam"
lr = 0.005
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster for the session (SLURM_CONF path), shut down at its end."""
    if sys.platform != "linux" or shutil.which("bash") is None:
        pytest.skip("a local Slurm cluster needs Linux and bash")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "LMC_SLURM_DIR": str(state), "LMC_SLURMCTLD_PORT": str(_free_port()),
           "LMC_SLURMD_PORT": str(_free_port())}
    t0 = time.perf_counter()
    try:
        up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
        pytest.skip("slurm_local.sh up took more than 15 min (apt-get?)")
    setup_s = time.perf_counter() - t0
    if up.returncode != 0:
        why = (up.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no local Slurm cluster (scripts/slurm_local.sh up exited {up.returncode}): {why}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    print(f"\n[slurm] cluster up in {setup_s:.1f} s ({'; '.join(up.stderr.strip().splitlines())})")
    yield {"conf": conf, "setup_s": setup_s, "env": env}
    subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


def _reproduce(grid, root, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "reproduce", str(grid), "--results", str(root), *extra],
                          capture_output=True, text=True, env=env, cwd=paths.REPO_ROOT, timeout=900)


def test_reproduce_on_a_real_slurm_cluster_trains_each_run_once_and_matches_local(slurm_cluster, tmp_path,
                                                                                  mnist_small):
    import torch

    grid = tmp_path / "tiny.toml"
    grid.write_text(GRID)
    roots = {name: tmp_path / name / "results" for name in ("slurm", "local")}
    for root in roots.values():
        shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    # The jobs run this checkout's code with this interpreter: submitit starts sys.executable,
    # and the job's environment (sbatch exports it) and working directory carry the import path.
    env = {**os.environ, "SLURM_CONF": slurm_cluster["conf"], "PYTHONPATH": str(paths.REPO_ROOT)}

    t0 = time.perf_counter()
    proc = _reproduce(grid, roots["slurm"], "--executor", "slurm", "--jobs", "2", "--cpus-per-job", "1",
                      "--timeout-min", "30", env=env)
    slurm_s = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted 2 slurm job(s)" in proc.stdout
    print(f"\n[slurm] lmc reproduce (2 cells, 4 runs, 2 jobs) on Slurm: {slurm_s:.1f} s")

    out = roots["slurm"] / "reproduce" / "tiny" / "quick"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    trained = [run for e in events for run in e["trained"]]
    assert len(trained) == 4 and len(set(trained)) == 4  # 2 cells x 2 children, each trained exactly once
    # Two array tasks of one Slurm job ran them (submitit names their logs <job>_<task>_0_log.out).
    logs = sorted(p.name for p in (out / "submitit").glob("*_log.out"))
    assert len(logs) == 2 and [name.split("_")[1] for name in logs] == ["0", "1"], logs
    for run in trained:
        run_dir = paths.run_dir(run, roots["slurm"])
        assert (run_dir / paths.DONE).exists()
        assert len((run_dir / paths.METRICS).read_text().splitlines()) == 2
    # What was sent to sbatch: the project's interpreter, one CPU per job, an array of two.
    script = next((out / "submitit").glob("*_submission.sh")).read_text()
    assert sys.executable in script and "#SBATCH --cpus-per-task=1" in script and "#SBATCH --array=0-1%2" in script
    assert not list(roots["slurm"].rglob(".*.tmp"))

    t0 = time.perf_counter()
    local = _reproduce(grid, roots["local"], "--jobs", "2", env=os.environ.copy())
    print(f"[slurm] the same grid on the local pool: {time.perf_counter() - t0:.1f} s")
    assert local.returncode == 0, local.stderr[-3000:]
    tables = [pd.read_csv(root / "reproduce" / "tiny" / "quick" / "table2.csv") for root in roots.values()]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    for run in trained:  # same thread count (one per job / worker): the same bits
        a, b = (torch.load(paths.run_dir(run, root) / paths.FINAL) for root in roots.values())
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
