"""Benchmark: the trainer's end-to-end epoch vs the same epoch on tensors already in memory,
interpolation vs T plain forward passes, and ADAM's step, torch's default vs fused.

    .venv/bin/python benchmarks/bench_train.py [--dataset mnist] [--epochs 3] [--device auto]

Minimal model (one hidden layer of 512, ReLU), SGD lr 0.1 momentum 0.9, batch 128, translation
by up to 2 pixels. "End to end" = the seeded FFCV loader (decode, augment, normalise) feeding
the training step; "in memory" = the same steps on pre-decoded, pre-normalised tensors in a
fixed random order, no augmentation: the floor the loader is measured against. Target: end to
end ≤ 1.25× in memory. The first epoch of each is a warm-up (compilation, caches) and is not
counted. Prints a Markdown table with the machine and versions.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from lmc import numerics

    numerics.apply()  # before torch loads: the pinned profile (LMC_NUMERICS=native for the libraries' own paths)
    import torch
    import torch.nn.functional as F

    import beton_builders
    from experiments.config import TrainConfig
    from experiments.training import build_model, build_optimizer, resolve_device, set_deterministic, task_for
    from lmc import paths
    from pipelines import load_split, make_loader, normalize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", help="mnist (full, from LMC_DATA_ROOT/mnist) or mnist5k")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--alphas", type=int, default=11)
    args = ap.parse_args()

    src = paths.data_root() / "mnist" if args.dataset == "mnist" else None
    betons = beton_builders.ensure(args.dataset, src=src)
    cfg = TrainConfig(dataset=args.dataset)
    dev = resolve_device(args.device)
    set_deterministic()
    x_all, y_all = load_split(betons["train"], device=dev)
    loader = make_loader(betons["train"], batch_size=cfg.batch_size, order_seed=1, aug_seed=1,
                         augment=cfg.augment, device=dev)
    manifest = loader.manifest
    shape = (manifest["image_shape"][2], *manifest["image_shape"][:2])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(model, opt, x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(run_epoch) -> list[float]:
        model = build_model(cfg, shape, manifest["num_classes"]).to(dev)
        opt = build_optimizer(cfg, model)
        times = []
        for epoch in range(args.epochs + 1):
            sync()
            t0 = time.perf_counter()
            run_epoch(model, opt, epoch)
            sync()
            times.append(time.perf_counter() - t0)
        return times[1:]

    def end_to_end(model, opt, epoch):
        for x, y, _ in loader.iter_epoch(epoch):
            step(model, opt, x, y)

    x_norm = normalize(x_all, manifest)
    gen = torch.Generator().manual_seed(0)

    def in_memory(model, opt, epoch):
        order = torch.randperm(len(x_norm), generator=gen).to(dev)
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            step(model, opt, x_norm[idx], y_all[idx])

    e2e = timed(end_to_end)
    mem = timed(in_memory)

    # Interpolation vs T forward passes over the same (test) split.
    from experiments.interpolate import lerp_state

    task = task_for(cfg, device=dev)
    a = build_model(cfg, shape, manifest["num_classes"]).to(dev)
    b = build_model(TrainConfig(init_seed=1), shape, manifest["num_classes"]).to(dev)
    sa, sb = a.state_dict(), b.state_dict()
    task.evaluate(a, "test")  # warm-up (decodes the split once)
    t0 = time.perf_counter()
    for alpha in torch.linspace(0, 1, args.alphas).tolist():
        a.load_state_dict(lerp_state(sa, sb, alpha))
        task.evaluate(a, "test")
    sync()
    t_interp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.alphas):
        task.evaluate(b, "test")
    sync()
    t_fwd = time.perf_counter() - t0

    # ADAM's step on the quick Table 1's deepest net (8-layer linear, width 128, batch 128):
    # torch's default per-tensor implementation vs the fused kernel the trainer uses.
    adam_ms = {}
    deep = TrainConfig(model="linear", depth=8, width=128, optimizer="adam", lr=0.005)
    xb = torch.randn(128, *shape, device=dev)
    yb = torch.randint(0, manifest["num_classes"], (128,), device=dev)
    for fused in (False, True):
        model = build_model(deep, shape, manifest["num_classes"]).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=deep.lr, fused=fused)
        best = float("inf")
        for _ in range(4):  # the first round is a warm-up
            sync()
            t0 = time.perf_counter()
            for _ in range(100):
                step(model, opt, xb, yb)
            sync()
            best = min(best, (time.perf_counter() - t0) / 100)
        adam_ms[fused] = 1000 * best

    from importlib.metadata import version

    print(f"# bench_train: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {dev}, torch {torch.__version__}, ffcv {version('ffcv')}, numba {version('numba')}; "
          f"dataset {args.dataset} ({len(x_all)} train images), {args.epochs} timed epochs after 1 warm-up")
    print()
    print("| what | seconds | ratio |")
    print("|---|---:|---:|")
    m_e2e, m_mem = statistics.median(e2e), statistics.median(mem)
    print(f"| epoch, in memory (median) | {m_mem:.2f} | 1.00 |")
    print(f"| epoch, end to end through the seeded loader (median) | {m_e2e:.2f} | {m_e2e / m_mem:.2f} |")
    print(f"| {args.alphas} plain forward passes over the test split | {t_fwd:.2f} | 1.00 |")
    print(f"| interpolation at {args.alphas} α over the test split | {t_interp:.2f} | {t_interp / t_fwd:.2f} |")
    print(f"| ADAM training step, 8-layer linear, batch 128, torch default (ms) | {adam_ms[False]:.2f} | 1.00 |")
    print(f"| ADAM training step, same, fused as in the trainer (ms) | {adam_ms[True]:.2f} | "
          f"{adam_ms[True] / adam_ms[False]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
