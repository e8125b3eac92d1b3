"""`lmc emergence`: when does linear mode connectivity appear during training?

Frankle et al. (2020): spawn two children from one parent after k steps, each under its own
noise, and measure their barrier against k. The first k at which the barrier's whole 95%
confidence interval (over seed pairs) lies below 2% is where training became stable to SGD
noise: "LMC emerges at k*".

    lmc emergence --model mlp --depth 2 --dataset mnist5k --spawn-steps 0,16,64,256 --seeds 3

Per seed pair i: the init seed is i; the parent trains once under its own noise (order and
augmentation seed 0), saving its state at every k on the way (``train_parent``); at each k two
children with seeds (2i+1, 2i+1) and (2i+2, 2i+2) continue to the end; k = 0 is the plain pair.
Every child is an ordinary run and every pair an ordinary interpolation, under the usual
folders, so nothing is trained twice and reruns resume.
"""
from __future__ import annotations

import math
import time


def register(sub) -> None:
    from experiments.config import TrainConfig
    from lmc import config as cfglib

    p = sub.add_parser("emergence", help="barrier vs spawn step k: when LMC emerges (Frankle et al. 2020)")
    cfglib.add_arguments(p, TrainConfig, skip=("spawn_step", "parent_order_seed", "parent_aug_seed", "replicate",
                                               "init_seed", "order_seed", "aug_seed"))
    p.add_argument("--spawn-steps", default=None, metavar="K,K,...",
                   help="steps after which the children split off (default: 0 and log-spaced up to half the run)")
    p.add_argument("--seeds", type=int, default=3, help="seed pairs per spawn step, for the intervals (default 3)")
    p.add_argument("--alphas", type=int, default=11, help="interpolation points (default 11)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="strict overrides, e.g. lr=0.01")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def default_spawn_steps(total_steps: int, points: int = 6) -> tuple[int, ...]:
    """0, then ``points`` log-spaced steps from 1 up to half the run (rounded, distinct)."""
    top = max(1, total_steps // 2)
    steps = {0, *(round(top ** (i / (points - 1))) for i in range(points))} if top > 1 else {0, 1}
    return tuple(sorted(steps))


def parse_steps(text: str) -> tuple[int, ...]:
    from lmc.errors import UsageError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise UsageError(f"--spawn-steps {text!r}: expected non-negative integers separated by commas, e.g. 0,16,64")
    return tuple(sorted({int(p) for p in parts}))


def pair_configs(cfg, index: int, step: int):
    """The two children of seed pair ``index`` at spawn step ``step``."""
    from experiments.grids import pair_seeds
    from experiments.pairs import child_configs
    from lmc.config import replace

    init_seed, seeds_a, seeds_b = pair_seeds(index)
    # The parent's noise: seeds 0, distinct from every child's (1, 2, 3, ...).
    shared = replace(cfg, init_seed=init_seed, order_seed=0, aug_seed=0, spawn_step=step)
    return child_configs(shared, seeds_a, seeds_b)


def measure(cfg, steps, seeds: int, root=None, *, device="auto", num_alphas: int = 11, progress: bool = False):
    """Every (spawn step, seed pair, split) barrier row of ``cfg``: each seed pair's parent is
    trained once to all its spawn steps, then two children per step, then their interpolation.
    The data must exist; the steps must fit in the run (``run`` checks both for the command)."""
    import pandas as pd

    from experiments.interpolate import interpolate_runs
    from experiments.training import task_for, train, train_parent

    steps_per_epoch = task_for(cfg, root).steps_per_epoch
    rows = []
    for index in range(seeds):
        spawned = [k for k in steps if k > 0]
        if spawned:
            parent = pair_configs(cfg, index, spawned[0])[0].parent()
            print(f"[emergence] seed pair {index}: parent to steps {', '.join(map(str, spawned))}")
            train_parent(parent, spawned, root, device=device)
        for k in steps:
            runs = [train(child, root, device=device, progress=progress) for child in pair_configs(cfg, index, k)]
            _, bars = interpolate_runs(*runs, num_alphas=num_alphas, root=root, device=device, progress=False)
            rows.append(bars.assign(spawn_step=k, pair=index, epochs_at_spawn=k / steps_per_epoch))
    return pd.concat(rows, ignore_index=True)


def run(args) -> int:
    import beton_builders
    from analysis import emergence as report
    from beton_builders.registry import DATASETS
    from experiments.config import TrainConfig
    from experiments.training import task_for
    from lmc import config as cfglib
    from lmc import paths
    from lmc.errors import UsageError

    cfg = cfglib.apply_overrides(cfglib.from_args(TrainConfig, args), args.set)
    if args.seeds < 2:
        raise UsageError(f"--seeds {args.seeds}: the 95% intervals need at least 2 seed pairs")
    if args.alphas < 2:
        raise UsageError(f"--alphas must be at least 2 (α = 0 and 1), got {args.alphas}")
    steps = parse_steps(args.spawn_steps) if args.spawn_steps else None
    paths.check_layout(args.results)
    if cfg.dataset in DATASETS:
        beton_builders.ensure(cfg.dataset, args.results)
    steps_per_epoch = task_for(cfg, args.results).steps_per_epoch
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    steps = steps or default_spawn_steps(total)
    if steps[-1] > total:
        raise UsageError(f"--spawn-steps: {steps[-1]} is beyond the run's {total} steps ({cfg.epochs} epochs of "
                         f"{steps_per_epoch}); choose steps of at most {total}")

    t0 = time.perf_counter()
    barriers = measure(cfg, steps, args.seeds, args.results, device=args.device, num_alphas=args.alphas,
                       progress=not args.quiet)
    table, k_star = report.emergence_table(barriers)

    out = paths.emergence_dir(cfg.run_name(), steps, args.seeds, args.results)
    written = report.write(table, barriers, out)
    print()
    print(report.printable(table).to_markdown(index=False))
    print()
    where = (f"LMC emerges at k* = {k_star} steps ({k_star / steps_per_epoch:.2f} epochs)" if k_star is not None
             else "LMC does not emerge at the spawn steps tried (no interval lies below 2% on both splits)")
    print(f"[emergence] {where}; {args.seeds} seed pairs, 95% bootstrap intervals")
    print(f"[emergence] figure: {written['figure']}")
    print(f"[emergence] finished in {math.ceil(time.perf_counter() - t0)} s")
    print(written["table"])
    return 0
