"""The pinned numerics profile (lmc/numerics.py) and `lmc verify`.

The core proof: the same tiny training (tests/numerics_child.py, real digits) in fresh
processes whose environment picks other CPU code paths and thread counts gives different
weights without the profile and identical weights with it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import small_config
from lmc import numerics, paths

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("numerics_child.py")
_SCRUB = (*numerics.KNOBS, numerics.MODE_ENV, numerics.THREADS_ENV, numerics.ALLOW_ENV, "LMC_NUMERICS_OVERRIDDEN")
_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(numerics.cpu_info()["simd_flags"])
needs_avx2 = pytest.mark.skipif(not numerics.cpu_supports_profile(),
                                reason="the pinned profile needs an x86-64 CPU with AVX2")

# Without the profile: each of these changes the weights (measured; docs/numerics.md).
NATIVE = {"OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
          "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
          "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"}}
if _AVX512:  # elsewhere ATen's native kernels are the AVX2 ones already
    NATIVE["ATEN_CPU_CAPABILITY=avx2"] = {"ATEN_CPU_CAPABILITY": "avx2"}
# With the profile: the caller's environment tries the same, and an AVX2-only CPU is emulated
# where the profile leaves the choice to the libraries.
PINNED = {"OMP_NUM_THREADS=2, MKL_NUM_THREADS=2": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
          "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
          "ATEN_CPU_CAPABILITY=avx512, MKL_CBWR=AVX2,STRICT": {"ATEN_CPU_CAPABILITY": "avx512",
                                                               "MKL_CBWR": "AVX2,STRICT"},
          "AVX2-only CPU: MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2":
              {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
_NATIVE_REFERENCE = {"OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """1,536 real digits (the same batches every child trains on), as an npz the children read."""
    import numpy as np

    from beton_builders import embedded

    x, y = embedded.load_arrays()["train"]
    path = tmp_path_factory.mktemp("numerics") / "digits.npz"
    np.savez(path, x=x[:1536], y=y[:1536])
    return path


_trained: dict = {}


def train_in_fresh_process(digits, env: dict, *, pinned: bool) -> dict:
    key = (pinned, tuple(sorted(env.items())))
    if key not in _trained:
        full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        full.update(env, **{numerics.MODE_ENV: "pinned" if pinned else "native"})
        out = subprocess.run([sys.executable, str(CHILD), str(digits)], env=full, capture_output=True, text=True,
                             timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        _trained[key] = json.loads(out.stdout.splitlines()[-1])
    return _trained[key]


@needs_avx2
@pytest.mark.parametrize("setting", list(NATIVE))
def test_without_the_profile_the_code_path_changes_the_weights(digits, setting):
    reference = train_in_fresh_process(digits, _NATIVE_REFERENCE, pinned=False)
    other = train_in_fresh_process(digits, {**_NATIVE_REFERENCE, **NATIVE[setting]}, pinned=False)
    assert other != reference, f"{setting} did not change any model's weights on this CPU"


@needs_avx2
@pytest.mark.parametrize("setting", list(PINNED))
def test_under_the_profile_the_callers_code_path_does_not(digits, setting):
    reference = train_in_fresh_process(digits, {}, pinned=True)
    assert train_in_fresh_process(digits, PINNED[setting], pinned=True) == reference
    # and the profile is a different arithmetic from the native one, not a no-op
    assert reference != train_in_fresh_process(digits, _NATIVE_REFERENCE, pinned=False)


# -- the profile's environment and record ---------------------------------------------------------

def _apply_in_fresh_process(env: dict, *args: str) -> subprocess.CompletedProcess:
    code = ("import json, os, sys; from lmc import numerics; numerics.apply(*sys.argv[1:]); "
            "assert 'torch' not in sys.modules; print(json.dumps(dict(os.environ)))")
    full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True, text=True, cwd=REPO)


def test_the_profile_wins_over_the_callers_environment_and_remembers_it():
    ambient = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2,STRICT", "OMP_NUM_THREADS": "8"}
    env = json.loads(_apply_in_fresh_process(ambient).stdout)
    assert {k: env[k] for k in numerics.pins(1)} == numerics.pins(1)
    assert json.loads(env["LMC_NUMERICS_OVERRIDDEN"]) == ambient
    # opting out leaves the caller's settings alone
    env = json.loads(_apply_in_fresh_process(ambient, "native").stdout)
    assert {k: env[k] for k in ambient} == ambient and env[numerics.MODE_ENV] == "native"


@pytest.mark.parametrize("mode", ["pinned", "native"])
def test_numba_parallel_code_never_runs_on_the_tbb_layer(mode):
    """numba's TBB layer can hang at exit after FFCV's loader thread ran parallel code (numba
    issue 10556): every lmc process prefers OpenMP, then workqueue. A caller's choice wins."""
    code = ("import sys; from lmc import numerics; numerics.apply(sys.argv[1]); import threading, numba, numpy as np\n"
            "@numba.njit(parallel=True)\ndef f(n):\n    out = np.zeros(n)\n"
            "    for i in numba.prange(n):\n        out[i] = i\n    return out\n"
            "t = threading.Thread(target=f, args=(1000,)); t.start(); t.join(); print(numba.threading_layer())")
    scrubbed = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("NUMBA_THREADING")}
    run = subprocess.run([sys.executable, "-c", code, mode], env=scrubbed, capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() in ("omp", "workqueue")
    mine = subprocess.run([sys.executable, "-c", code, mode], env={**scrubbed, "NUMBA_THREADING_LAYER": "workqueue"},
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert mine.stdout.strip() == "workqueue", mine.stderr


@pytest.mark.parametrize("env, words", [({"LMC_NUMERICS": "fastest"}, "LMC_NUMERICS='fastest'"),
                                        ({"LMC_NUMERICS_THREADS": "0"}, "LMC_NUMERICS_THREADS='0'")])
def test_a_bad_setting_is_one_line_and_exit_2(env, words):
    full = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    out = subprocess.run([sys.executable, "-m", "app.cli", "models"], env={**full, **env}, capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and words in out.stderr


@pytest.mark.skipif(numerics.mode() != "pinned", reason="the session runs under LMC_NUMERICS=native")
def test_applying_after_torch_loaded_is_refused(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")  # as if the pins had not been set in time
    with pytest.raises(RuntimeError, match="before the first `import torch`"):
        numerics.apply()


@needs_avx2
@pytest.mark.skipif(numerics.mode() != "pinned", reason="the session runs under LMC_NUMERICS=native")
def test_the_pins_are_in_effect_and_recorded_in_provenance(verified_run):
    import json

    assert numerics.effective() == {"aten_cpu_capability": "AVX2", "mkl_cnr": "COMPATIBLE",
                                    "intra_op_threads": 1, "onednn": False}
    prov = json.loads((verified_run / paths.PROVENANCE).read_text())  # what the trainer recorded
    assert prov["numerics"]["name"] == numerics.PROFILE_NAME and prov["numerics"]["pins"] == numerics.pins(1)
    assert "avx2" in prov["machine"]["cpu"]["simd_flags"] and prov["machine"]["cpu"]["model"]


def test_check_resume_refuses_another_profile_unless_allowed(monkeypatch):
    saved = numerics.profile()
    assert numerics.check_resume(saved) == []
    other = json.loads(json.dumps(saved))
    other["effective"]["intra_op_threads"] = 2
    with pytest.raises(numerics.ProfileMismatchError, match="effective.intra_op_threads: 2 -> 1") as err:
        numerics.check_resume(other)
    assert "\n" not in str(err.value)
    assert numerics.check_resume(other, allow=True) == ["effective.intra_op_threads: 2 -> 1"]
    monkeypatch.setenv(numerics.ALLOW_ENV, "1")
    assert numerics.check_resume(None) == ["no numerics profile was recorded"]


def test_state_digest_is_bitwise():
    state = {"w": torch.linspace(-1, 1, 12).reshape(3, 4), "b": torch.zeros(3)}
    same = {k: v.clone() for k, v in state.items()}
    assert numerics.state_digest(state) == numerics.state_digest(same)
    same["w"].view(torch.int32)[1, 2] ^= 1  # one bit of the mantissa
    assert numerics.state_digest(state) != numerics.state_digest(same)


# -- lmc verify --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def verified_run(mnist_small, results_root):
    from experiments.training import train

    return train(small_config(order_seed=3, aug_seed=4), results_root, progress=False)


def test_verify_finds_a_run_identical(verified_run, capsys):
    from app.cli import main

    assert main(["verify", str(verified_run)]) == 0
    out = capsys.readouterr().out
    assert "[verify] identical: the weights of epoch 2" in out
    assert "loader digest (data order and augmentation): identical" in out


def test_verify_names_the_first_differing_tensor(verified_run, tmp_path, capsys):
    from app.verify import verify

    copy = paths.run_dir(verified_run.name, tmp_path)
    shutil.copytree(verified_run, copy)
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", tmp_path))
    from experiments.training import checkpoints

    for stored in (copy / paths.FINAL, paths.checkpoint_path(copy, 2)):
        ckpt = checkpoints.load(stored)  # a valid checkpoint of other weights (a damaged one is refused)
        ckpt["model"]["layers.1.weight"][0, 0] += 0.25
        checkpoints.save(stored, ckpt)
    report = verify(copy, log=print)
    assert not report["identical"] and report["first"] == "layers.1.weight" and report["differing"] == 1
    assert report["largest"] == pytest.approx(0.25, rel=1e-3)
    assert "DIFFERENT at epoch 2: first differing tensor layers.1.weight" in capsys.readouterr().out


def test_verify_checks_an_epoch_by_its_logged_digest_and_refuses_one_the_run_never_had(verified_run, capsys):
    from app.cli import main

    # Epoch 1's checkpoint is long replaced, but its weights' sha256 is in metrics.jsonl.
    assert main(["verify", str(verified_run), "--epochs", "1"]) == 0
    assert "identical: the weights of epoch 1" in capsys.readouterr().out
    assert main(["verify", str(verified_run), "--epochs", "9"]) == 2
    assert "keeps the weights of epoch(s) 1, 2 only" in capsys.readouterr().err


# -- the demo's golden check ----------------------------------------------------------------------

def test_demo_golden_check_says_whether_the_weights_were_reproduced():
    from app.demo import golden_check, read_golden

    golden = read_golden()
    assert golden is not None and golden["profile"] == numerics.PROFILE_NAME and len(golden["runs"]) == 6
    observed = {k: golden[k] for k in ("epochs", "runs", "table")}
    assert "REPRODUCED bit for bit" in golden_check(observed, golden)
    one_off = {**observed, "runs": {**golden["runs"], next(iter(golden["runs"])): "0" * 64}}
    assert "NOT reproduced: 1 of 6 runs' final weights differ" in golden_check(one_off, golden)
    assert "NOT reproduced: the table differs" in golden_check({**observed, "table": "x"}, golden)
    assert "skipped" in golden_check({**observed, "epochs": 2}, golden)
    renamed = {**observed, "runs": {k + "x": v for k, v in golden["runs"].items()}}
    assert "not comparable" in golden_check(renamed, golden)
