"""Evidence for the numerics profile: which CPU ops change their results with which setting.

    .venv/bin/python benchmarks/probe_numerics.py [--quick]

Every setting runs in a fresh subprocess (the environment variables act only before torch
loads): ATen's kernel capability (``ATEN_CPU_CAPABILITY``), MKL's reproducibility branch
(``MKL_CBWR``) and instruction cap (``MKL_ENABLE_INSTRUCTIONS``), oneDNN's ISA cap
(``ONEDNN_MAX_CPU_ISA``) and torch's oneDNN switch, and 1 or 2 intra-op threads. Each child
runs the ops the study's models use, forward and backward, on inputs drawn with numpy (so the
inputs never depend on torch's kernels), plus the optimisers' steps and the models' seeded
initialisation. The parent prints, per op, the largest absolute difference from the
reference setting; 0 means bitwise equal. Two blocks: settings varied one at a time from the
machine's native defaults, then the same emulated code paths under the pinned profile.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Native: one setting varied at a time from an environment with none of the knobs set.
NATIVE_VARIANTS = [
    ("threads=1", {}, 1),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}, 2),
    ("ATEN_CPU_CAPABILITY=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, 2),
    ("MKL_CBWR=AUTO", {"MKL_CBWR": "AUTO"}, 2),
    ("MKL_CBWR=AVX2", {"MKL_CBWR": "AVX2"}, 2),
    ("MKL_CBWR=AVX2,STRICT", {"MKL_CBWR": "AVX2,STRICT"}, 2),
    ("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}, 2),
    ("MKL_ENABLE_INSTRUCTIONS=AVX2", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, 2),
    ("MKL_ENABLE_INSTRUCTIONS=SSE4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
    ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, 2),
    ("oneDNN off", {"PROBE_MKLDNN": "0"}, 2),
]


# Under the profile: the caller's environment tries the same code paths (the profile must win),
# an AVX2-only CPU is emulated where the profile leaves the choice to the library, and the
# profile's own thread count is changed (a different profile: the ops that depend on it show).
PROFILE_VARIANTS = [
    ("OMP_NUM_THREADS=2, MKL_NUM_THREADS=2", {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, 0),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}, 0),
    ("ATEN_CPU_CAPABILITY=avx512", {"ATEN_CPU_CAPABILITY": "avx512"}, 0),
    ("MKL_CBWR=AVX2,STRICT", {"MKL_CBWR": "AVX2,STRICT"}, 0),
    ("MKL_ENABLE_INSTRUCTIONS=SSE4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 0),
    ("AVX2-only CPU (MKL, oneDNN capped)", {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, 0),
    ("LMC_NUMERICS_THREADS=2", {"LMC_NUMERICS_THREADS": "2"}, 0),
    ("LMC_NUMERICS_THREADS=3", {"LMC_NUMERICS_THREADS": "3"}, 0),
]


# -- the child: run every op, save its outputs ---------------------------------------------------

def child(out: str, threads: int, use_profile: bool) -> None:
    if use_profile:
        from lmc import numerics

        numerics.apply()
    import numpy as np
    import torch
    import torch.nn.functional as F

    if use_profile:
        numerics.configure_torch()  # the profile's own thread count
    else:
        torch.set_num_threads(threads)
    if os.environ.get("PROBE_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
    rng = np.random.default_rng(0)

    def t(*shape, scale=1.0):
        return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))

    res: dict[str, torch.Tensor] = {}

    def grads(name, fn, *inputs):
        """``fn(*inputs)`` and the gradients of a fixed random projection of it."""
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        y = fn(*leaves)
        g = t(*y.shape) if y.dim() else torch.tensor(1.0)
        (y * g).sum().backward() if y.dim() else y.backward()
        res[name + " fwd"] = y.detach()
        res[name + " bwd"] = torch.cat([x.grad.flatten() for x in leaves])

    # Linear layers of the MNIST models (batch 128) and a long reduction (batch 1024, dW).
    grads("linear 784->512", F.linear, t(128, 784), t(512, 784, scale=0.03), t(512, scale=0.03))
    grads("linear 512->512", F.linear, t(128, 512), t(512, 512, scale=0.04), t(512, scale=0.04))
    grads("linear 512->10", F.linear, t(128, 512), t(10, 512, scale=0.04), t(10, scale=0.04))
    grads("linear 3072->8192, batch 1024", F.linear, t(1024, 3072), t(256, 3072, scale=0.02), t(256))
    grads("bmm (attention scores)", torch.bmm, t(64, 65, 48), t(64, 48, 65))
    grads("einsum nlf,olf->nol (LC layer)", lambda a, b: torch.einsum("nlf,olf->nol", a, b),
          t(32, 64, 48), t(16, 64, 48))
    grads("cross_entropy (mean)", lambda z: F.cross_entropy(z, torch.from_numpy(rng.integers(0, 10, 128))),
          t(128, 10, scale=3.0))
    grads("log_softmax", lambda z: F.log_softmax(z, dim=1), t(128, 10, scale=3.0))
    grads("softmax (65 tokens)", lambda z: z.softmax(-1), t(64, 65, 65))
    grads("layer_norm 192", lambda x, w, b: F.layer_norm(x, (192,), w, b, 1e-6), t(520, 192), t(192), t(192))
    grads("conv2d 3->128 k4 s4", lambda x, w, b: F.conv2d(x, w, b, stride=4), t(128, 3, 32, 32),
          t(128, 3, 4, 4, scale=0.1), t(128))
    grads("leaky_relu", lambda x: F.leaky_relu(x, 0.1), t(128, 512))
    grads("sum over batch (bias grad)", lambda x: x.sum(0), t(1024, 512))
    grads("mean of all (1M)", lambda x: x.mean(), t(1024, 1024))
    res["norm of all (1M)"] = torch.linalg.vector_norm(t(1024, 1024))
    res["exp, log, tanh"] = torch.cat([t(4096).exp(), t(4096).abs().log(), t(4096).tanh()])
    images = torch.from_numpy(rng.integers(0, 256, (128, 1, 28, 28), dtype=np.uint8))
    res["normalize uint8"] = (images.to(torch.float32) - 33.3) / 78.5

    # Optimisers: three steps each on the same parameters and gradients.
    def optimise(name, make):
        params = [torch.nn.Parameter(t(512, 784, scale=0.03)), torch.nn.Parameter(t(512, scale=0.03))]
        opt = make(params)
        for _ in range(3):
            for p in params:
                p.grad = t(*p.shape, scale=0.01)
            opt.step()
        res[name] = torch.cat([p.detach().flatten() for p in params])

    optimise("Adam fused", lambda p: torch.optim.Adam(p, lr=0.005, fused=True))
    optimise("Adam foreach", lambda p: torch.optim.Adam(p, lr=0.005, foreach=True))
    optimise("Adam single-tensor", lambda p: torch.optim.Adam(p, lr=0.005, foreach=False))
    optimise("SGD momentum foreach", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=True))
    optimise("clip_grad_norm_ + SGD", lambda p: _Clipped(p))

    # Seeded initialisation as the models do it (kaiming uniform, trunc normal, randn).
    torch.manual_seed(0)
    res["init nn.Linear 784->512"] = torch.nn.Linear(784, 512).weight.detach()
    res["init trunc_normal_"] = torch.nn.init.trunc_normal_(torch.empty(66, 192), std=0.02)
    res["init randn"] = torch.randn(4096)
    torch.save(res, out)


class _Clipped:
    def __init__(self, params):
        import torch

        self.params, self.sgd = params, torch.optim.SGD(params, lr=0.1, momentum=0.9)

    def step(self):
        import torch

        torch.nn.utils.clip_grad_norm_(self.params, 0.1)
        self.sgd.step()


# -- the parent ---------------------------------------------------------------------------------

def run_child(env: dict, threads: int, use_profile: bool, out: Path) -> None:
    from lmc import numerics

    unset = (*numerics.KNOBS, numerics.MODE_ENV, numerics.THREADS_ENV, "LMC_NUMERICS_OVERRIDDEN")
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full.update(env)
    cmd = [sys.executable, __file__, "--child", str(out), "--threads", str(threads)]
    if use_profile:
        cmd.append("--profile")
    subprocess.run(cmd, env=full, check=True, cwd=REPO)


def compare(ref: dict, other: dict) -> dict[str, float]:
    import torch

    out = {}
    for name, a in ref.items():
        b = other[name]
        out[name] = 0.0 if torch.equal(a, b) else float((a.double() - b.double()).abs().nan_to_num(1e30).max())
    return out


def block(title: str, variants, use_profile: bool, tmp: Path) -> tuple[list[str], dict]:
    import torch

    ref_path = tmp / f"{title}-ref.pt"
    run_child({}, 2, use_profile, ref_path)  # (a profile child ignores the thread argument)
    ref = torch.load(ref_path)
    diffs = {}
    for i, (name, env, threads) in enumerate(variants):
        path = tmp / f"{title}-{i}.pt"
        run_child(env, threads, use_profile, path)
        diffs[name] = compare(ref, torch.load(path))
    return list(ref), diffs


def table(title: str, ops: list[str], diffs: dict) -> str:
    cols = list(diffs)
    lines = [f"### {title}", "", "| op | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for op in ops:
        cells = ["0" if diffs[c][op] == 0 else f"{diffs[c][op]:.1e}" for c in cols]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=("native", "profile"), help="run one block only")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads, args.profile)
        return 0

    import torch

    from lmc import numerics

    print(f"# Per-op differences between CPU code paths\n\nmachine: {numerics.cpu_info()['model']}, "
          f"{os.cpu_count()} CPUs, native ATen capability {torch.backends.cpu.get_cpu_capability()}; "
          f"torch {torch.__version__}, python {platform.python_version()}. Cells: max |difference| from "
          f"the block's reference; 0 = bitwise equal.\n")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "native"):
            ops, diffs = block("native", NATIVE_VARIANTS, False, Path(tmp))
            print(table("Without the profile: one setting changed at a time", ops, diffs) + "\n")
        if args.only in (None, "profile"):
            ops, diffs = block("profile", PROFILE_VARIANTS, True, Path(tmp))
            print(table("Under the profile (reference: its default, 1 thread): the caller's environment "
                        "tries other code paths", ops, diffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
