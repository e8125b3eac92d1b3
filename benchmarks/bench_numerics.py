"""Benchmark: what the pinned numerics profile costs, per training step and for the whole demo.

    .venv/bin/python benchmarks/bench_numerics.py [--pairs 3] [--demo-pairs 1] [--demo-epochs 20]

A = the pinned profile (ATen AVX2 kernels, MKL's COMPATIBLE branch, oneDNN off, 1 intra-op
thread); B = native (``lmc --fast-numerics``: the libraries' own code paths, torch's default
thread count); B1 = native with 1 thread (the same thread count as A, to separate the cost of
the code paths from that of the threads). Each measurement is a fresh process (the settings
act before torch loads), run interleaved A B A B ... so that a load change on a shared
machine hits both sides; the table gives the median time of each and the median of the
per-pair ratios. Step: the demo's models on a batch of 128 (forward, backward, optimiser
step), median of 5 blocks of 20 steps after 10 warm-up steps. Demo: `lmc demo --quiet` in a
fresh results root (data build, numba compilation, 6 runs, interpolation). Prints a Markdown
table with the machine and versions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = {"A pinned": {"LMC_NUMERICS": "pinned"}, "B native": {"LMC_NUMERICS": "native"},
         "B1 native, 1 thread": {"LMC_NUMERICS": "native", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
STEP_MODELS = {"minimal MLP, SGD": dict(model="mlp", depth=2, optimizer="sgd", lr=0.1),
               "8-layer linear, ADAM": dict(model="linear", depth=8, optimizer="adam", lr=0.005)}


def child_step() -> None:
    from lmc import numerics

    numerics.apply()
    import torch
    import torch.nn.functional as F

    from experiments.config import TrainConfig
    from experiments.training import build_model, build_optimizer

    numerics.configure_torch()
    out = {"threads": torch.get_num_threads()}
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    for name, kw in STEP_MODELS.items():
        cfg = TrainConfig(dataset="mnist5k", **kw)
        model = build_model(cfg, (1, 28, 28), 10)
        opt = build_optimizer(cfg, model)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(10):
            step()
        blocks = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(20):
                step()
            blocks.append((time.perf_counter() - t0) / 20)
        out[name] = statistics.median(blocks) * 1e3
    print(json.dumps(out))


def _env(mode: str) -> dict:
    unset = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LMC_NUMERICS_THREADS",
             "LMC_NUMERICS_OVERRIDDEN", "MKL_DYNAMIC", "OMP_DYNAMIC")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(MODES[mode])
    return env


def measure_steps(mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child-step"], env=_env(mode), capture_output=True,
                         text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.splitlines()[-1])


def measure_demo(mode: str, epochs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-numerics-") as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "app.cli", "demo", "--quiet", "--results", tmp, "--epochs", str(epochs)],
                       env=_env(mode), check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def interleaved(measure, modes: list[str], pairs: int) -> dict[str, list]:
    got = {m: [] for m in modes}
    for _ in range(pairs):
        for m in modes:
            got[m].append(measure(m))
    return got


def rows_for(label: str, samples: dict[str, list], unit: str) -> list[str]:
    a = samples["A pinned"]
    rows = []
    for mode, values in samples.items():
        ratio = "1" if mode == "A pinned" else f"{statistics.median(x / y for x, y in zip(a, values)):.2f}"
        rows.append(f"| {label} | {mode} | {statistics.median(values):.1f} {unit} | {ratio} | {len(values)} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child-step", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds of step measurements")
    ap.add_argument("--demo-pairs", type=int, default=1, help="interleaved rounds of the demo (0: skip it)")
    ap.add_argument("--demo-epochs", type=int, default=20, help="epochs per demo run (the demo's default: 20)")
    args = ap.parse_args()
    if args.child_step:
        child_step()
        return 0

    from lmc.numerics import cpu_info

    load0 = os.getloadavg()[0]
    steps = interleaved(measure_steps, list(MODES), args.pairs)
    rows = []
    for name in STEP_MODELS:
        rows += rows_for(f"step: {name}", {m: [r[name] for r in v] for m, v in steps.items()}, "ms")
    threads = {m: v[0]["threads"] for m, v in steps.items()}
    if args.demo_pairs:
        demo = interleaved(lambda m: measure_demo(m, args.demo_epochs), ["A pinned", "B native"], args.demo_pairs)
        rows += rows_for(f"`lmc demo`, {args.demo_epochs} epochs", demo, "s")
    import torch

    print(f"# Cost of the pinned numerics profile\n\nmachine: {cpu_info()['model']}, {os.cpu_count()} CPUs, "
          f"{platform.system()}; torch {torch.__version__}, python {platform.python_version()}; intra-op threads: "
          + ", ".join(f"{m} {t}" for m, t in threads.items())
          + f"; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n")
    print("| measured | mode | median | A / mode (median of per-pair ratios) | pairs |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
