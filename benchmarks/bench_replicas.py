"""Replica batches vs the sequential trainer: runs/s and samples/s against R, and a bitwise check.

    .venv/bin/python benchmarks/bench_replicas.py [--device cpu|cuda] [--replicas 1 2 4 8]
        [--model linear --depth 8 --width 512 --batch-size 128 --optimizer sgd --epochs 1]
        [--dataset mnist5k|mnist] [--pairs 2] [--threads N] [--kernels auto|per-replica|batched]

For each R, R runs of one architecture (init seeds 0..R-1, order/augmentation seeds r+1, learning
rates lr·(1 + r/10)) are trained end to end into fresh results directories: "sequential" =
``experiments.training.train`` once per run, one after the other (the FFCV loader, what a sweep
does without ``--replicas``); "batch" = ``experiments.training.train_replicas`` on all R at once
(device data, one stacked network). Both include everything a run does: the per-epoch test
evaluation, the train evaluation at the end, checkpoints, final.pt. The two are timed alternately,
A B A B, ``--pairs`` times after one warm-up of each, and the speed-up is the median of the
per-pair ratios (robust to a machine whose load drifts). The last column says whether every
replica's final weights are bitwise equal to its sequential run's, or else their largest
difference. Prints a Markdown table with the machine and versions.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def header(args, device, kernels: str) -> str:
    from importlib.metadata import version

    import numpy as np
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs available{gpu}, load average {load}\n"
            f"versions: python {platform.python_version()}, torch {torch.__version__}, ffcv {version('ffcv')}, "
            f"numpy {np.__version__}; torch threads {torch.get_num_threads()}\n"
            f"runs: {args.model} depth {args.depth} width {args.width}, {args.optimizer} lr {args.lr}, batch "
            f"{args.batch_size}, {args.epochs} epoch(s) of {args.dataset}, augment {args.augment}; device {device}, "
            f"batch kernels {kernels}; {args.pairs} interleaved pairs after one warm-up each; speed-up = median "
            f"of per-pair time ratios (sequential / batch)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8], help="values of R (default: 1 2 4 8)")
    ap.add_argument("--pairs", type=int, default=2, help="timed A B pairs per R (default: 2)")
    ap.add_argument("--dataset", default="mnist5k", help="mnist5k (embedded) or mnist (full, from LMC_DATA_ROOT)")
    ap.add_argument("--model", default="linear", choices=("linear", "mlp"))
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--augment", default="translate2")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--kernels", default="auto", help="the batch's kernels: auto, per-replica or batched")
    ap.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)")
    args = ap.parse_args(argv)

    import torch

    import beton_builders
    from experiments.config import TrainConfig
    from experiments.interpolate import load_final
    from experiments.training import resolve_device, train, train_replicas
    from experiments.training.stacked import resolve_kernels
    from lmc import paths
    from lmc.manifest import read_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    kernels = resolve_kernels(args.kernels, device)
    src = paths.data_root() / "mnist" if args.dataset == "mnist" else None

    def configs(r_count: int, epochs: int) -> list[TrainConfig]:
        return [TrainConfig(dataset=args.dataset, model=args.model, depth=args.depth, width=args.width,
                            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr * (1 + r / 10),
                            augment=args.augment, epochs=epochs, init_seed=r, order_seed=r + 1, aug_seed=r + 1)
                for r in range(r_count)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        betons = beton_builders.ensure(args.dataset, data, src=src)
        samples = read_manifest(betons["train"])["num_samples"]
        counter = iter(range(10 ** 6))

        def fresh() -> Path:
            root = Path(tmp) / f"r{next(counter)}"
            shutil.copytree(paths.beton_dir(args.dataset, data), paths.beton_dir(args.dataset, root))
            return root

        def sequential(cfgs) -> tuple[float, list[Path]]:
            root = fresh()
            sync()
            start = time.perf_counter()
            runs = [train(cfg, root, device=device.type, progress=False) for cfg in cfgs]
            sync()
            return time.perf_counter() - start, runs

        def batch(cfgs) -> tuple[float, list[Path]]:
            root = fresh()
            sync()
            start = time.perf_counter()
            runs = train_replicas(cfgs, root, device=device.type, progress=False, kernels=kernels)
            sync()
            return time.perf_counter() - start, runs

        warm = configs(2, 1)
        sequential(warm)
        batch(warm)
        table = []
        for r_count in args.replicas:
            cfgs = configs(r_count, args.epochs)
            a_times, b_times = [], []
            for _ in range(args.pairs):
                a, runs_a = sequential(cfgs)
                b, runs_b = batch(cfgs)
                a_times.append(a)
                b_times.append(b)
            finals = [(load_final(ra)[1], load_final(rb)[1]) for ra, rb in zip(runs_a, runs_b)]
            worst = max(float((wa[k] - wb[k]).abs().max()) for wa, wb in finals for k in wa)
            bitwise = "bitwise" if all(torch.equal(wa[k], wb[k]) for wa, wb in finals for k in wa) else \
                f"max |diff| {worst:.1e}"
            ratio = statistics.median(a / b for a, b in zip(a_times, b_times))
            seq, bat = statistics.median(a_times), statistics.median(b_times)
            table.append((r_count, r_count / seq, r_count / bat, r_count * samples * args.epochs / seq,
                          r_count * samples * args.epochs / bat, ratio, bitwise))
            print(f"  R={r_count}: sequential {seq:.2f} s, batch {bat:.2f} s, x{ratio:.2f}, {bitwise}",
                  file=sys.stderr)

    print(header(args, device, kernels) + "\n")
    print("| replicas R | sequential (runs/s) | batch (runs/s) | sequential (samples/s) | batch (samples/s) "
          "| batch speed-up | final weights vs sequential |\n|---:|---:|---:|---:|---:|---:|---|")
    for r_count, seq_runs, bat_runs, seq_samples, bat_samples, ratio, bitwise in table:
        print(f"| {r_count} | {seq_runs:.3f} | {bat_runs:.3f} | {seq_samples:,.0f} | {bat_samples:,.0f} | "
              f"{ratio:.2f}x | {bitwise} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
