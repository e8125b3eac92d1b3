"""Benchmark: a ViT training step on real CIFAR-10 images, dense vs with the PLATON hook vs with a
fixed mask, for a few small ViTs (sizing the study's quick scale), plus the global selection.

    .venv/bin/python benchmarks/bench_vit.py [--batch-size 128] [--steps 10] [--device auto] [--threads N]

Each step: forward, cross-entropy, backward, AdamW (lr 2e-4, as seed 001), on batches of the
CIFAR-10 5k subset already in memory (normalised, no augmentation: the loader is measured in
bench_loader.py). PLATON runs mid-schedule (ΔT = 10, masking every 10th step, final ratio 0.2);
the fixed mask keeps 20% (magnitude). Two warm-up steps are not counted; the median of
``--steps`` steps is reported. On the CPU the clock is this process's CPU time
(``time.process_time``): on a shared machine wall time measures the neighbours; with
``--threads 1`` CPU time is the work itself. On a GPU it is wall time after a synchronize. ``select`` is one ``select_global`` over every prunable entry.
Prints a Markdown table with the machine and versions.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = [  # (patch, depth, width, heads)
    (4, 4, 128, 4),
    (8, 4, 128, 4),
    (4, 6, 192, 3),
    (8, 6, 192, 3),
]


@dataclass
class State:
    model: object
    optimizer: object
    step: int = 0


def main() -> int:
    from lmc import numerics

    numerics.apply()  # before torch loads: the pinned profile (LMC_NUMERICS=native for the libraries' own paths)
    import numpy as np
    import torch
    import torch.nn.functional as F

    from experiments.models import build_model, count_parameters
    from experiments.pruning import MaskHook, Platon, PlatonConfig, magnitude_mask, select_global
    from lmc import paths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting (after 2 warm-up steps)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--sizes", default="all", help="comma-separated row numbers of SIZES to run, e.g. 0,1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = SIZES if args.sizes == "all" else [SIZES[int(i)] for i in args.sizes.split(",")]
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))

    npz = paths.data_root() / "cifar10-subset-5k" / "cifar10_subset_5k.npz"
    if not npz.exists():
        print(f"needs the CIFAR-10 subset at {npz} (set LMC_DATA_ROOT)", file=sys.stderr)
        return 2
    with np.load(npz) as data:
        x = torch.from_numpy(data["x_train"][: args.batch_size * 4]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.from_numpy(data["y_train"][: args.batch_size * 4]).long()
    x = ((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)).to(dev)
    y = y.to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    clock = time.perf_counter if dev.type == "cuda" else time.process_time

    def timed(state, hooks) -> float:
        times = []
        for i in range(args.steps + 2):
            sync()
            start = clock()
            lo = (i % 4) * args.batch_size
            state.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(state.model(x[lo:lo + args.batch_size]), y[lo:lo + args.batch_size]).backward()
            for h in hooks:
                h.after_backward(state)
            state.optimizer.step()
            state.step += 1
            for h in hooks:
                h.after_step(state)
            sync()
            if i >= 2:
                times.append(clock() - start)
        return 1e3 * statistics.median(times)

    rows = []
    for patch, depth, width, heads in sizes:
        torch.manual_seed(0)
        model = build_model("vit", (3, 32, 32), 10, kernel=patch, depth=depth, width=width, heads=heads).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
        dense = timed(State(model, opt), [])
        platon = Platon(model, PlatonConfig(final_ratio=0.2, delta_t=10, initial_warmup=0.0, final_warmup=0.1),
                        total_steps=10_000)
        with_platon = timed(State(model, opt, step=1000), [platon])
        mask = magnitude_mask(model, 0.2)
        with_mask = timed(State(model, opt), [MaskHook(mask)])
        scores = {n: torch.rand_like(p) for n, p in model.named_parameters() if n in platon.names}
        sync()
        start = clock()
        select_global(scores, mask.num_kept)
        sync()
        select_ms = 1e3 * (clock() - start)
        rows.append((f"p{patch} L{depth} D{width} h{heads}", (32 // patch) ** 2 + 1, count_parameters(model),
                     mask.num_total, dense, with_platon, with_mask, select_ms))

    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if cpuinfo.exists() else platform.machine()
    print(f"machine: {cpu} ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads, "
          f"device {dev}{' (' + torch.cuda.get_device_name() + ')' if dev.type == 'cuda' else ''}; "
          f"python {platform.python_version()}, torch {torch.__version__}; batch {args.batch_size}, "
          f"median of {args.steps} steps, {'wall' if dev.type == 'cuda' else 'CPU'} time\n")
    print("| ViT | tokens | params | prunable | dense ms/step | + PLATON | + fixed mask | select_global ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, tokens, params, prunable, d, p, m, s in rows:
        print(f"| {name} | {tokens} | {params:,} | {prunable:,} | {d:.1f} | {p:.1f} | {m:.1f} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
