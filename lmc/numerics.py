"""The pinned numerics profile: a run's weights depend on its config alone, on any x86-64 CPU
with AVX2, whatever the thread settings of the shell that starts it.

What the CPU libraries choose per host, and what the profile pins (evidence in docs/numerics.md,
``benchmarks/probe_numerics.py`` prints it on any machine):

* ATen picks its vectorised kernels by CPU (default / AVX2 / AVX-512). Softmax, log-softmax,
  layer norm, the optimisers and the seeded initialisation round differently per width.
  Pinned: ``ATEN_CPU_CAPABILITY=avx2``.
* MKL (every matmul: linear, bmm, einsum) dispatches on the CPU's vendor and ISA. Its
  reproducible branches ``AVX2``/``AVX512`` are honoured on Intel CPUs only; elsewhere MKL
  silently runs ``AUTO``. ``COMPATIBLE`` is the one branch MKL honours on every x86-64 CPU.
  Pinned: ``MKL_CBWR=COMPATIBLE`` (with ``MKL_DYNAMIC``/``OMP_DYNAMIC`` off, MKL's conditions).
* oneDNN runs fp32 convolutions with kernels chosen by ISA and thread count. Pinned: torch's
  oneDNN switch off, so convolutions take ATen's own path (im2col + MKL, pinned above).
* Thread count: MKL's COMPATIBLE gemm (at 3 threads), ATen's layer-norm and softmax backward
  (at 2) sum in per-thread pieces. The profile makes the intra-op thread count part of itself:
  1 by default, ``LMC_NUMERICS_THREADS=N`` for another (recorded, and a different profile).

Environment variables act only before torch loads, so :func:`apply` runs first in every
process (the ``lmc`` entry point, the tests' conftest, sweep workers); spawned children
inherit the environment. :func:`configure_torch` sets what only torch can set, once loaded.
The profile wins over the caller's environment; ``LMC_NUMERICS=native`` (``lmc
--fast-numerics``) opts out and is recorded, like everything else, by :func:`profile`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import tempfile

from lmc.errors import UserError
from lmc.provenance import cpu_info  # the profile records the CPU that ran it

MODE_ENV = "LMC_NUMERICS"                 # pinned (default) | native
THREADS_ENV = "LMC_NUMERICS_THREADS"      # the pinned profile's intra-op threads (default 1)
ALLOW_ENV = "LMC_NUMERICS_ALLOW_CHANGE"   # 1: resume a run under another profile (recorded)
NUMBA_LAYERS_ENV, NUMBA_LAYERS = "NUMBA_THREADING_LAYER_PRIORITY", "omp workqueue tbb"
_OVERRIDDEN_ENV = "LMC_NUMERICS_OVERRIDDEN"  # the caller's values the profile replaced (JSON)
MODES = ("pinned", "native")
PROFILE_NAME = "pinned-1"  # bump when the pins change: runs of another version do not resume

# Every setting measured to change (or suspected of changing) CPU results; recorded as found.
KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_NUM_THREADS", "MKL_DYNAMIC",
         "OMP_NUM_THREADS", "OMP_DYNAMIC", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


class NumericsError(UserError):
    """The profile cannot hold here (bad setting, CPU without AVX2, torch loaded too early)."""


class ProfileMismatchError(NumericsError):
    """A run would resume under another numerics profile than the one that started it."""


# -- settings and environment -------------------------------------------------------------------

def mode() -> str:
    value = os.environ.get(MODE_ENV, "pinned").strip().lower() or "pinned"
    if value not in MODES:
        raise NumericsError(f"{MODE_ENV}={value!r} is not a numerics mode; use one of {', '.join(MODES)}")
    return value


def pinned_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise NumericsError(f"{THREADS_ENV}={raw!r} must be a positive integer (the pinned profile's "
                            f"intra-op thread count; default 1)")
    return int(raw)


def pins(threads: int | None = None) -> dict[str, str]:
    """The environment of the pinned profile."""
    n = str(threads or pinned_threads())
    return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE",
            "OMP_DYNAMIC": "FALSE", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def apply(chosen_mode: str | None = None) -> None:
    """Put the profile into ``os.environ``; call before anything imports torch. Idempotent.

    The caller's own values of the pinned variables are replaced and remembered (children
    inherit the memory), so provenance can say what the profile overrode.
    """
    # numba's TBB threading layer can deadlock at interpreter exit once parallel code has run on
    # a thread other than the main one, as FFCV's loader thread does (numba issue 10556, oneTBB
    # 2022; seen here: a finished `lmc reproduce` spinning in tbb::finalize). OpenMP first, then
    # numba's own workqueue; the loader's output does not depend on the layer (digests equal).
    # Set in both modes; an explicit NUMBA_THREADING_LAYER(_PRIORITY) of the caller wins.
    os.environ.setdefault(NUMBA_LAYERS_ENV, NUMBA_LAYERS)
    if chosen_mode is not None and chosen_mode != mode():
        if "torch" in sys.modules:
            raise RuntimeError(f"numerics mode {chosen_mode!r} asked for after torch was imported under "
                               f"{mode()!r}; choose the mode before the first `import torch`")
        os.environ[MODE_ENV] = chosen_mode
    if mode() == "native":
        return
    wanted = pins()
    if "torch" in sys.modules:
        late = sorted(k for k, v in wanted.items() if os.environ.get(k) != v)
        if late:
            raise RuntimeError(f"torch was imported before lmc.numerics.apply(): {', '.join(late)} cannot "
                               f"take effect any more; call apply() before the first `import torch`")
        return
    overridden = json.loads(os.environ.get(_OVERRIDDEN_ENV) or "{}")
    for key, value in wanted.items():
        if os.environ.get(key, value) != value:
            overridden.setdefault(key, os.environ[key])
    os.environ.update(wanted)
    os.environ[_OVERRIDDEN_ENV] = json.dumps(overridden, sort_keys=True)


def set_pinned_threads(threads: int) -> None:
    """Change the pinned profile's thread count in a running process (``lmc verify`` replays a
    run's): the count is read at run time, unlike the other pins."""
    os.environ[THREADS_ENV] = str(threads)
    os.environ.update({k: v for k, v in pins(threads).items() if k.endswith("NUM_THREADS")})
    if "torch" in sys.modules:
        configure_torch()


def configure_torch() -> None:
    """What only a loaded torch can set, then a check that the pins took effect.

    Call it where training or evaluation starts (cheap, idempotent)."""
    import torch

    if mode() == "native":
        return
    torch.set_num_threads(pinned_threads())
    # fp32 convolutions: ATen's own path (im2col + MKL) instead of oneDNN's ISA- and
    # thread-dependent kernels.
    torch.backends.mkldnn.enabled = False
    torch.set_float32_matmul_precision("highest")
    eff = effective()
    if eff["aten_cpu_capability"] != "AVX2":
        raise NumericsError(
            f"the pinned numerics profile needs an x86-64 CPU with AVX2 and torch loaded after "
            f"lmc.numerics.apply(); this process runs ATen's {eff['aten_cpu_capability']} kernels "
            f"(CPU: {cpu_info()['model']}). Start it through `lmc` (or call apply() before importing "
            f"torch), or opt out with {MODE_ENV}=native (recorded; results then depend on the machine)")
    if eff["mkl_cnr"] not in ("COMPATIBLE", "absent"):
        raise NumericsError(f"MKL runs its {eff['mkl_cnr']} branch, not the pinned COMPATIBLE one: MKL was "
                            f"used before lmc.numerics.apply(); call apply() before importing torch")


# -- what is in effect ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _mkl_cnr() -> str:
    """MKL's reproducibility branch in use, as MKL itself reports it (its verbose line)."""
    import torch

    if not torch.backends.mkl.is_available():
        return "absent"
    sys.stdout.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)  # MKL writes its verbose line to the C-level stdout
        try:
            with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                torch.mm(torch.ones(2, 2), torch.ones(2, 2))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    for word in text.split():
        if word.startswith("CNR:"):
            return word[4:]
    return "unknown"


def effective() -> dict:
    import torch

    return {"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl_cnr": _mkl_cnr(),
            "intra_op_threads": torch.get_num_threads(), "onednn": bool(torch.backends.mkldnn.enabled)}


def cpu_supports_profile() -> bool:
    """Whether this CPU can run the pinned profile (x86-64 with AVX2, as /proc/cpuinfo says)."""
    return platform.machine().lower() in ("x86_64", "amd64") and "avx2" in cpu_info()["simd_flags"]


def profile() -> dict:
    """The record of this process's numerics, for provenance.json and checkpoints."""
    import torch

    native = mode() == "native"
    return {
        "name": "native" if native else PROFILE_NAME,
        "pins": {} if native else pins(),
        # native: the caller's settings it ran under; pinned: the caller's values it replaced
        "ambient": ({k: os.environ[k] for k in KNOBS if k in os.environ} if native
                    else json.loads(os.environ.get(_OVERRIDDEN_ENV) or "{}")),
        "effective": effective(),
        "torch": str(torch.__version__),
        "libraries": _linked_libraries(),
        "cpu": cpu_info()["model"],
    }


@functools.lru_cache(maxsize=1)
def _linked_libraries() -> list[str]:
    """The math libraries inside this torch build (MKL, oneDNN), as torch reports them."""
    import torch

    return [line.strip(" -") for line in torch.__config__.show().splitlines()
            if "Math Kernel Library" in line or "MKL-DNN" in line or "OpenBLAS" in line]


def _key(record: dict) -> dict:
    """The parts of a profile that decide the arithmetic (a native one also depends on the CPU)."""
    key = {k: record.get(k) for k in ("name", "pins", "effective", "torch", "libraries")}
    if record.get("name") == "native":
        key["cpu"] = record.get("cpu")
    return key


def differences(saved: dict | None, current: dict) -> list[str]:
    if not saved:
        return ["no numerics profile was recorded"]
    a, b = _key(saved), _key(current)
    out = []
    for field in b:
        x, y = a.get(field), b.get(field)
        if isinstance(x, dict) and isinstance(y, dict):
            out += [f"{field}.{k}: {x.get(k)!r} -> {y.get(k)!r}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(f"{field}: {x!r} -> {y!r}")
    return out


def check_resume(saved: dict | None, *, allow: bool | None = None) -> list[str]:
    """Refuse to continue a run under another profile than the one that wrote ``saved``.

    Returns the differences (empty when the profiles agree); with ``allow`` (default: the
    environment variable ``LMC_NUMERICS_ALLOW_CHANGE=1``) it returns them instead of raising,
    for the caller to record."""
    diffs = differences(saved, profile())
    if allow is None:
        allow = os.environ.get(ALLOW_ENV, "") == "1"
    if diffs and not allow:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise ProfileMismatchError(f"the checkpoint was written under another numerics profile ({diffs[0]}{more}); "
                                   f"resuming would mix arithmetic and the run would not be redone bit for bit. "
                                   f"Resume under the run's profile (see its provenance.json), or set "
                                   f"{ALLOW_ENV}=1 to resume anyway (recorded)")
    return diffs


# The key under which a trainer may log state_digest(model.state_dict()) per epoch in
# metrics.jsonl: `lmc verify --epochs N` then checks epochs whose checkpoint was not kept.
WEIGHTS_DIGEST_KEY = "weights_sha256"


def state_digest(state: dict) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes: equal iff bitwise equal."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
