"""Loader throughput: seeded pipeline vs FFCV's stock augmentations vs a torch DataLoader.

    .venv/bin/python benchmarks/bench_loader.py [--images 50000] [--epochs 3] [--threads 2]

50k 32x32 colour images (the CIFAR-10 5k subset tiled; random pixels when the data root is
absent), batch 256, horizontal flip (p = 0.5) + translation by up to 4 px. Every row yields
uint8 batches of shape (256, 3, 32, 32) except where it says otherwise. One warm-up epoch,
then the median of ``--epochs`` timed epochs. Prints a markdown table with the machine,
versions and load average, and the warm start of the seeded loader in a fresh process.
Results and their conditions are recorded in docs/pipelines.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATCH, PAD = 256, 4


def dataset(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    from lmc import paths

    npz = paths.data_root() / "cifar10-subset-5k" / "cifar10_subset_5k.npz"
    if npz.exists():
        with np.load(npz) as d:
            x, y = np.concatenate([d["x_train"], d["x_test"]]), np.concatenate([d["y_train"], d["y_test"]])
        source = "CIFAR-10 5k subset, tiled"
    else:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 5000)
        source = "random pixels (CIFAR-10 subset not found)"
    reps = -(-n // len(x))
    return np.tile(x, (reps, 1, 1, 1))[:n], np.tile(y, reps)[:n].astype(np.int64), source


def timed(make_epoch, n_images: int, epochs: int) -> float:
    """Median images/s over ``epochs`` full passes, after one warm-up pass."""
    rates = []
    for e in range(epochs + 1):
        start = time.perf_counter()
        seen = sum(len(batch[0]) for batch in make_epoch(e))
        elapsed = time.perf_counter() - start
        assert seen == n_images, (seen, n_images)
        if e > 0:
            rates.append(n_images / elapsed)
    return float(np.median(rates))


def ffcv_loader(beton: Path, ops, threads: int):
    from lmc.ffcv_compat import import_ffcv, keep_threads

    import_ffcv()
    from ffcv.fields.decoders import NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor, ToTorchImage

    with keep_threads():
        loader = Loader(str(beton), batch_size=BATCH, num_workers=threads, order=OrderOption.RANDOM, seed=0,
                        drop_last=False, pipelines={"image": [NDArrayDecoder(), *ops, ToTensor(), ToTorchImage()],
                                                    "label": None})
    return lambda e: iter(loader)


class Augmented:
    """A map-style dataset with per-sample numpy flip + translate, as a torch user would write it."""

    def __init__(self, x, y):
        self.x, self.y, self.rng = x, y, np.random.default_rng(0)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        import torch

        img = self.x[i][:, ::-1] if self.rng.random() < 0.5 else self.x[i]
        ty, tx = self.rng.integers(-PAD, PAD + 1, 2)
        out = np.zeros((3, 32, 32), np.uint8)  # out[y, x] = img[y + ty, x + tx], zero outside
        out[:, max(0, -ty):32 - max(0, ty), max(0, -tx):32 - max(0, tx)] = \
            img[max(0, ty):32 + min(0, ty), max(0, tx):32 + min(0, tx)].transpose(2, 0, 1)
        return torch.from_numpy(out), int(self.y[i])


def _seed_worker(worker_id):
    import torch

    torch.utils.data.get_worker_info().dataset.rng = np.random.default_rng(worker_id)


def warm_start(beton: Path) -> dict:
    """A second process on the warm numba cache: import, construction, first batch."""
    code = ("import time, json, sys; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
            "from pipelines import make_loader; t2 = time.perf_counter(); "
            "loader = make_loader(sys.argv[1], batch_size=256, order_seed=0, augment='translate_flip'); "
            "t3 = time.perf_counter(); next(loader.iter_epoch(0)); t4 = time.perf_counter(); "
            "print(json.dumps({'import_torch_s': t1 - t0, 'import_pipelines_s': t2 - t1, "
            "'make_loader_s': t3 - t2, 'first_batch_s': t4 - t3, 'make_loader_to_first_batch_s': t4 - t2}))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, str(beton)], capture_output=True, text=True,
                                      check=True, cwd=REPO).stdout.strip().splitlines()[-1]) for _ in range(2)]
    return runs[-1]


def header(threads: int, n: int, epochs: int, source: str) -> str:
    from importlib.metadata import version

    import numba
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs available, load average {load}\n"
            f"versions: python {platform.python_version()}, torch {torch.__version__}, ffcv {version('ffcv')}, "
            f"numba {numba.__version__}, numpy {np.__version__}\n"
            f"data: {n} images 32x32x3 ({source}), batch {BATCH}, flip p=0.5 + translate {PAD} px, "
            f"{threads} threads; median of {epochs} epochs after one warm-up")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--skip-torch", action="store_true", help="leave out the torch DataLoader row")
    args = parser.parse_args(argv)

    import torch

    from beton_builders.writer import write_arrays
    from pipelines import make_loader

    x, y, source = dataset(args.images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        beton = Path(tmp) / "bench.beton"
        write_arrays(x, y, beton, dataset="bench", split="train", num_classes=10)
        from ffcv.transforms import RandomHorizontalFlip, RandomTranslate

        t = args.threads
        rows.append(("decode only: FFCV NDArrayDecoder -> ToTensor -> ToTorchImage (ceiling)",
                     timed(ffcv_loader(beton, [], t), args.images, args.epochs)))
        rows.append(("FFCV stock RandomHorizontalFlip + RandomTranslate (unseeded)",
                     timed(ffcv_loader(beton, [RandomHorizontalFlip(0.5), RandomTranslate(PAD)], t),
                           args.images, args.epochs)))
        for name, normalize in (("seeded translate_flip, uint8 NCHW", False),
                                ("seeded translate_flip, normalised float32 NCHW", True)):
            loader = make_loader(beton, batch_size=BATCH, order_seed=0, aug_seed=0, augment="translate_flip",
                                 workers=t, normalize=normalize)
            rows.append((name, timed(loader.iter_epoch, args.images, args.epochs)))
        loader = make_loader(beton, batch_size=BATCH, order_seed=0, augment="none", workers=t, normalize=False)
        rows.append(("seeded, augment=none (decode + NCHW copy)",
                     timed(loader.iter_epoch, args.images, args.epochs)))
        if not args.skip_torch:
            data = torch.utils.data.DataLoader(Augmented(x, y), batch_size=BATCH, shuffle=True, num_workers=t,
                                               worker_init_fn=_seed_worker, persistent_workers=True,
                                               generator=torch.Generator().manual_seed(0))
            rows.append((f"torch DataLoader, {t} workers, per-sample numpy flip + translate",
                         timed(lambda e: iter(data), args.images, args.epochs)))
        warm = warm_start(beton)

    rates = dict(rows)
    seeded = rates["seeded translate_flip, uint8 NCHW"]
    print(header(args.threads, args.images, args.epochs, source) + "\n")
    print("| pipeline | images/s | seeded (uint8) is |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {seeded / rate:.2f}x |")
    print("\nwarm start, second process: " + ", ".join(f"{k} {v:.2f}" for k, v in warm.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
