"""`lmc loader ...`: look at and fingerprint the seeded loader's output."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add this stage's subcommands to the `lmc` parser."""
    p = sub.add_parser("loader", help="inspect the seeded loader: Figure 4 grids and noise digests")
    lsub = p.add_subparsers(dest="loader_command", metavar="ACTION", parser_class=type(p))
    lsub.required = True

    s = lsub.add_parser("show", help="render the paper's Figure 4: first batches of re-initialised loaders")
    s.add_argument("--beton", required=True, help="the .beton file (e.g. CIFAR-10 train)")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.add_argument("--augment", default="translate_flip", help="augmentation preset (default: translate_flip)")
    s.add_argument("--images", type=int, default=8, help="batch size, i.e. images per row (default: 8)")
    s.add_argument("--inits", type=int, default=3, help="loaders initialised per seed pair (default: 3)")
    s.add_argument("--seeds", nargs="+", default=["43,43", "118,118"], metavar="ORDER,AUG",
                   help="(order seed, augmentation seed) pairs (default: the paper's 43,43 118,118)")
    s.set_defaults(func=_show)

    d = lsub.add_parser("digest", help="print per-epoch sha256 digests of order, stream and augmentations")
    d.add_argument("--beton", required=True, help="the .beton file")
    d.add_argument("--order-seed", type=int, required=True)
    d.add_argument("--aug-seed", type=int, required=True)
    d.add_argument("--epochs", type=int, required=True, help="digest epochs 0..E-1")
    d.add_argument("--batch-size", type=int, required=True)
    d.add_argument("--augment", default=None,
                   help="augmentation preset (default: none); token .betons: offset (default) or none")
    d.add_argument("--block-size", type=int, default=None,
                   help="token .betons only: tokens per window, minus one (the model's context)")
    d.add_argument("--workers", type=int, default=None, help="loader threads (default: available CPUs)")
    d.set_defaults(func=_digest)


def _show(args) -> int:
    from pipelines.figure import render

    from lmc.errors import UsageError
    from lmc.seeds import parse_seed_pair

    if args.images < 1 or args.inits < 1:
        raise UsageError("--images and --inits must be >= 1")
    seed_pairs = tuple(parse_seed_pair(item) for item in args.seeds)
    result = render(args.beton, args.out, seed_pairs=seed_pairs, inits=args.inits, images=args.images,
                    augment=args.augment)
    print(json.dumps(result, sort_keys=True))
    return 0 if all(result["identical"].values()) else 1


def _digest(args) -> int:
    from pipelines.digest import loader_digest

    epochs = loader_digest(args.beton, order_seed=args.order_seed, aug_seed=args.aug_seed, augment=args.augment,
                           epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
                           block_size=args.block_size)
    print(json.dumps(epochs, indent=2, sort_keys=True))
    return 0
