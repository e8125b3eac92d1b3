"""`lmc beton ...`: build and verify .beton files."""
from __future__ import annotations

import json


def register(sub) -> None:
    from beton_builders.registry import DATASETS

    p = sub.add_parser("beton", help="build and verify .beton files from standard dataset files")
    bsub = p.add_subparsers(dest="beton_command", metavar="ACTION", parser_class=type(p))
    bsub.required = True

    b = bsub.add_parser("build", help="build the .beton files of a dataset")
    b.add_argument("dataset", choices=sorted(DATASETS), help="which dataset")
    b.add_argument("--src", default=None, help="where its standard distribution files are")
    b.add_argument("--out", default=None, help="output folder (default: <results>/betons/<dataset>)")
    b.add_argument("--split", default="all", choices=("train", "test", "all"))
    b.set_defaults(func=_build)

    v = bsub.add_parser("verify", help="check a .beton against its manifest")
    v.add_argument("path", help="the .beton file")
    v.set_defaults(func=_verify)


def _build(args) -> int:
    from pathlib import Path

    from beton_builders.registry import get
    from lmc import paths

    out = Path(args.out) if args.out else paths.beton_dir(args.dataset)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    built = get(args.dataset).build(out, splits=splits, src=args.src)
    for split, beton in built.items():
        print(f"{split}: {beton}")
    return 0


def _verify(args) -> int:
    from beton_builders.manifest import ManifestError, load_verified

    try:
        m = load_verified(args.path)
    except ManifestError as exc:
        print(f"FAIL {exc}")
        return 1
    print(json.dumps({"ok": True, "dataset": m["dataset"], "split": m["split"], "num_samples": m["num_samples"]}))
    return 0
