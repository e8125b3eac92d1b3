"""`lmc train`, `lmc train-pair`, `lmc interpolate`, `lmc align`, `lmc models`."""
from __future__ import annotations

import json

from experiments.config import TrainConfig
from lmc import config as cfglib

# Input shape (C, H, W) and classes of the datasets `lmc models` can size models for.
DATASET_SHAPES = {"mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
                  "cifar100": ((3, 32, 32), 100), "tiny_imagenet": ((3, 64, 64), 200)}


def _seed_pair(text: str) -> tuple[int, int]:
    import argparse

    from lmc.seeds import parse_seed_pair

    try:
        return parse_seed_pair(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _execution(p) -> None:
    """Where and how to run: not part of a run's config, so not part of its name."""
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto picks cuda when available (recorded in provenance.json, not in the run's name)")
    p.add_argument("--results", default=None, help="results root (default: $LMC_RESULTS or ./results)")


def _common(p) -> None:
    cfglib.add_arguments(p, TrainConfig)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="strict overrides, e.g. lr=0.01")
    _execution(p)
    p.add_argument("--allow-device-change", action="store_true",
                   help="resume a run checkpointed on another kind of device (recorded in provenance.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (finished runs are skipped, unfinished ones resume)")
    _common(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-pair", help="train two children from one initialisation under different noise")
    _common(p)
    p.add_argument("--seeds-a", type=_seed_pair, default=(1, 1), metavar="ORDER,AUG", help="child A's seeds")
    p.add_argument("--seeds-b", type=_seed_pair, default=(2, 2), metavar="ORDER,AUG", help="child B's seeds")
    p.add_argument("--same-noise", action="store_true",
                   help="sanity check: B reuses A's seeds; weights must be identical and the barrier exactly 0")
    p.add_argument("--interpolate", action="store_true", help="interpolate the pair when trained")
    p.set_defaults(func=_train_pair)

    p = sub.add_parser("interpolate", help="error/loss along the straight line between two runs, and barriers")
    p.add_argument("run_a", help="run directory of endpoint A")
    p.add_argument("run_b", help="run directory of endpoint B")
    p.add_argument("--alphas", type=int, default=11, help="number of evenly spaced α in [0, 1] (default 11)")
    p.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    p.add_argument("--allow-different", action="store_true",
                   help="interpolate runs whose settings differ beyond their noise (recorded in barriers.json)")
    _execution(p)
    p.set_defaults(func=_interpolate)

    _register_align(sub)

    p = sub.add_parser("models", help="parameter counts of the model families (Table 3)")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASET_SHAPES))
    p.set_defaults(func=_models)


def _config(args) -> TrainConfig:
    """The config of the flags, with init_from / mask_from pinned to the sha256 of their content."""
    from experiments.training.initial import pin

    return pin(cfglib.apply_overrides(cfglib.from_args(TrainConfig, args), args.set), args.results)


def _ensure_data(cfg: TrainConfig, root) -> None:
    """The command builds a missing dataset it knows how to build; the trainer never does."""
    import beton_builders
    from beton_builders.registry import DATASETS

    if cfg.dataset in DATASETS:
        beton_builders.ensure(cfg.dataset, root)


def _train(args) -> int:
    from experiments.training import train
    from lmc import paths

    cfg = _config(args)  # validated before anything is written
    paths.check_layout(args.results)
    _ensure_data(cfg, args.results)
    run = train(cfg, args.results, device=args.device, progress=not args.quiet,
                allow_device_change=args.allow_device_change)
    print(run)
    return 0


def _train_pair(args) -> int:
    from experiments.pairs import train_pair
    from lmc import paths
    from lmc.errors import UsageError

    cfg = _config(args)
    if args.seeds_a == args.seeds_b and not args.same_noise:
        raise UsageError(f"--seeds-a and --seeds-b are both {args.seeds_a}; use --same-noise for that control")
    paths.check_layout(args.results)
    _ensure_data(cfg, args.results)
    run_a, run_b = train_pair(cfg, args.seeds_a, args.seeds_b, same_noise=args.same_noise, root=args.results,
                              device=args.device, progress=not args.quiet,
                              allow_device_change=args.allow_device_change)
    print(run_a)
    print(run_b)
    if args.same_noise:
        return _same_noise_verdict(run_a, run_b, args)
    if args.interpolate:
        from experiments.interpolate import interpolate_runs

        _, bars = interpolate_runs(run_a, run_b, root=args.results, device=args.device, progress=not args.quiet)
        print(bars[["split", "error_barrier_pct", "loss_barrier", "acc_a", "acc_b"]].to_markdown(index=False))
    return 0


def _same_noise_verdict(run_a, run_b, args) -> int:
    import torch

    from experiments.interpolate import interpolate_runs, load_final

    _, sa = load_final(run_a)
    _, sb = load_final(run_b)
    identical = all(torch.equal(sa[k], sb[k]) for k in sa)
    _, bars = interpolate_runs(run_a, run_b, root=args.results, device=args.device, progress=False)
    zero = bool((bars.error_barrier == 0).all() and (bars.loss_barrier == 0).all())
    print(json.dumps({"identical_weights": identical, "barrier_exactly_zero": zero}))
    return 0 if identical and zero else 1


def _interpolate(args) -> int:
    from experiments.interpolate import interpolate_runs
    from lmc.errors import UsageError

    splits = tuple(s for s in args.splits.split(",") if s)
    if args.alphas < 2:
        raise UsageError(f"--alphas must be at least 2 (α = 0 and 1), got {args.alphas}")
    _, bars = interpolate_runs(args.run_a, args.run_b, num_alphas=args.alphas, splits=splits, root=args.results,
                               device=args.device, allow_different=True if args.allow_different else ())
    cols = ["split", "error_barrier_pct", "normalized_barrier", "loss_barrier", "max_deviation", "acc_a", "acc_b"]
    print(bars[cols].to_markdown(index=False, floatfmt=".4f"))
    return 0


def _models(args) -> int:
    import pandas as pd

    from experiments.models import parameter_table

    shape, classes = DATASET_SHAPES[args.dataset]
    table = pd.DataFrame(parameter_table(shape, classes))
    print(table.to_markdown(index=False))
    return 0


# -- lmc align (experiments/align.py) ---------------------------------------------------------

def _register_align(sub) -> None:
    p = sub.add_parser("align", help="permute run B's hidden units to match run A's (weight matching), "
                                     "then compare the barrier before and after")
    p.add_argument("run_a", help="run directory of endpoint A (the reference)")
    p.add_argument("run_b", help="run directory of endpoint B (the one permuted)")
    p.add_argument("--alphas", type=int, default=11, help="number of evenly spaced α in [0, 1] (default 11)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which the permutations are visited")
    p.add_argument("--splits", default="train,test", help="comma-separated splits (default train,test)")
    p.add_argument("--results", default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_align)


def _align(args) -> int:
    from experiments.align import align_runs

    splits = tuple(s for s in args.splits.split(",") if s)
    result = align_runs(args.run_a, args.run_b, seed=args.seed, num_alphas=args.alphas, splits=splits,
                        root=args.results, device=args.device, progress=not args.quiet)
    m = result.matching
    print(f"weight matching: {m.sweeps} sweep(s) changed the permutations"
          f"{'' if m.converged else ' (stopped at the sweep limit before converging)'}; "
          f"weight distance {result.distance_before:.4g} -> {result.distance_after:.4g}")
    print(result.table().to_markdown(index=False, floatfmt=".4f"))
    print(result.aligned_run)
    return 0
