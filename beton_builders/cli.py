"""`lmc beton ...`: build, verify and adopt .beton files."""
from __future__ import annotations

import json


def register(sub) -> None:
    from beton_builders.registry import DATASETS

    p = sub.add_parser("beton", help="build and verify .beton files from standard dataset files")
    bsub = p.add_subparsers(dest="beton_command", metavar="ACTION", parser_class=type(p))
    bsub.required = True

    listing = "; ".join(f"{name}: {desc}" for name, (_, desc) in sorted(DATASETS.items()))
    b = bsub.add_parser("build", help="build the .beton files of a dataset", description=listing)
    b.add_argument("dataset", choices=sorted(DATASETS), help="which dataset")
    b.add_argument("--src", default=None,
                   help="its standard distribution files: folder or archive (default: under $LMC_DATA_ROOT)")
    b.add_argument("--out", default=None, help="output folder (default: <results>/betons/<dataset>)")
    b.add_argument("--split", default="all", choices=("train", "test", "all"))
    b.add_argument("--download", action="store_true",
                   help="fetch missing files from the official source first (fails fast offline)")
    b.add_argument("--encoding", default="raw", choices=("raw", "jpg"),
                   help="raw uint8 pixels (default, lossless) or JPEG (smaller, for large images)")
    b.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality with --encoding jpg")
    b.add_argument("--name", default=None,
                   help="npz and text: dataset name (default: the file's stem; text adds _<tokenizer>)")
    b.add_argument("--num-classes", type=int, default=None, help="npz only: number of classes (default: max(y)+1)")
    b.add_argument("--tokenizer", default=None, choices=("char", "gpt2"),
                   help="text only: one token per character (default) or GPT-2's BPE (needs --bpe)")
    b.add_argument("--bpe", default=None, help="text only: local GPT-2 BPE ranks file (gpt2.tiktoken); never downloaded")
    b.add_argument("--stride", type=int, default=None,
                   help="text only: stored samples start every STRIDE tokens and hold 2*STRIDE; the loader's "
                        "block size may be at most STRIDE (default: 1024)")
    b.add_argument("--vocab-from", default=None,
                   help="text, char only: reuse this char-level .beton's vocabulary (other characters are dropped)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=_build)

    v = bsub.add_parser("verify", help="check a .beton against its manifest")
    v.add_argument("path", help="the .beton file")
    v.set_defaults(func=_verify)

    a = bsub.add_parser("adopt", help="write a manifest for a .beton written by FFCV itself (images + labels)",
                        description="Reads FFCV's header, decodes the images, writes FILE's manifest beside it "
                                    "(the file is not changed). See docs/betons.md.")
    a.add_argument("path", metavar="FILE.beton", help="a .beton written with FFCV's DatasetWriter")
    a.add_argument("--num-classes", type=int, default=None, help="number of classes (default: max(label)+1)")
    a.add_argument("--name", default=None, help="dataset name in the manifest (default: the folder's name)")
    a.add_argument("--split", default=None, help="split name in the manifest (default: the file's stem)")
    a.add_argument("--image-field", default=None, help="the image field, when the file holds several")
    a.add_argument("--label-field", default=None, help="the label field (default: the first IntField)")
    a.add_argument("--sample", type=int, default=0,
                   help="decode only this many evenly spaced images (huge files; default 0 = every image)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_adopt)


def _build(args) -> int:
    from pathlib import Path

    from beton_builders import arrays, text
    from lmc.manifest import ManifestError
    from beton_builders.registry import get
    from lmc import paths
    from lmc.errors import UsageError

    opts = dict(src=args.src, download=args.download, progress=not args.quiet, encoding=args.encoding,
                jpeg_quality=args.jpeg_quality)
    name = args.dataset
    if args.dataset == arrays.NAME:
        if args.src is None:
            raise UsageError("npz needs --src: an .npz with x and y, or a folder of x.npy / y.npy")
        name = args.name or arrays.default_name(args.src)
        opts.update(name=name, num_classes=args.num_classes)
    elif args.dataset == text.NAME:
        if args.num_classes is not None:
            raise UsageError("--num-classes applies to npz only; a text corpus has a vocabulary instead")
        tokenizer = args.tokenizer or "char"
        name = args.name or text.default_name(args.src, tokenizer)
        opts.update(name=name, tokenizer=tokenizer, bpe=args.bpe, vocab_from=args.vocab_from,
                    stride=text.DEFAULT_STRIDE if args.stride is None else args.stride)
    elif args.name is not None or args.num_classes is not None:
        raise UsageError(f"--name and --num-classes apply to npz and text only; {args.dataset} fixes both")
    text_only = {"--tokenizer": args.tokenizer, "--bpe": args.bpe, "--stride": args.stride,
                 "--vocab-from": args.vocab_from}
    given = [flag for flag, value in text_only.items() if value is not None]
    if given and args.dataset != text.NAME:
        raise UsageError(f"{', '.join(given)} apply to text only")
    out = Path(args.out) if args.out else paths.beton_dir(name)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    try:
        built = get(args.dataset).build(out, splits=splits, **opts)
    except ManifestError as exc:
        # Bad input: one line naming the file and the problem; lmc's main exits 2.
        raise UsageError(str(exc)) from None
    for split, beton in built.items():
        print(f"{split}: {beton}")
    return 0


def _verify(args) -> int:
    from lmc.manifest import check_contents, load_verified

    # A ManifestError is a UserError: lmc's main prints it as one line on stderr, exit 2.
    m = load_verified(args.path)
    check_contents(args.path, m)
    print(json.dumps({"ok": True, "dataset": m["dataset"], "split": m["split"], "num_samples": m["num_samples"],
                      "beton_sha256": m["beton_sha256"]}))
    return 0


def _adopt(args) -> int:
    from beton_builders.adopt import adopt
    from lmc.errors import UsageError

    if args.num_classes is not None and args.num_classes < 1:
        raise UsageError(f"--num-classes must be at least 1, got {args.num_classes}")
    if args.sample < 0:
        raise UsageError(f"--sample must be 0 (every image) or a positive count, got {args.sample}")
    m = adopt(args.path, name=args.name, split=args.split, num_classes=args.num_classes,
              image_field=args.image_field, label_field=args.label_field, sample=args.sample,
              progress=not args.quiet)
    print(json.dumps({"ok": True, "dataset": m["dataset"], "split": m["split"], "num_samples": m["num_samples"],
                      "image_shape": m["image_shape"], "image_encoding": m["image_encoding"],
                      "num_classes": m["num_classes"], "fields": m["field_map"], "decoded": m["adopted"]["decoded"],
                      "beton_sha256": m["beton_sha256"]}))
    return 0
