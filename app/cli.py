"""The ``lmc`` command: one subcommand per stage of the study.

Each stage registers its own subcommands (``<package>/cli.py: register``) and imports its
heavy dependencies (torch, ffcv) only inside the handlers, so ``lmc --help`` stays fast and
``analysis`` never pulls in torch. The numerics profile (``lmc.numerics``) is applied first,
before anything can import torch: its environment variables act only before torch loads.
"""
from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), as the README promises."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message}\n")


from lmc import numerics
from lmc.errors import UsageError, UserError  # noqa: F401  (UsageError: re-exported for callers)

FAST_NUMERICS = "--fast-numerics"


def build_parser() -> Parser:
    from analysis import cli as analysis_cli
    from beton_builders import cli as beton_cli
    from experiments import cli as experiments_cli
    from app import demo, reproduce, verify
    from pipelines import cli as pipelines_cli

    parser = Parser(prog="lmc", description=__doc__.splitlines()[0] + " See README.md.")
    parser.add_argument(FAST_NUMERICS, action="store_true",
                        help=f"the CPU libraries' native code paths and thread count instead of the pinned "
                             f"numerics profile (= {numerics.MODE_ENV}=native): faster, recorded in provenance, "
                             f"but the weights then depend on the machine (docs/numerics.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    demo.register(sub)
    verify.register(sub)
    reproduce.register(sub)
    beton_cli.register(sub)
    pipelines_cli.register(sub)
    experiments_cli.register(sub)
    analysis_cli.register(sub)
    return parser


def _apply_numerics(argv: list[str]) -> None:
    """Before argparse and before any import of torch: the profile, or the opt-out asked for
    among the options that precede the command."""
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    numerics.apply("native" if FAST_NUMERICS in argv[:command_at] else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _apply_numerics(argv)
    except UserError as exc:  # a bad LMC_NUMERICS / LMC_NUMERICS_THREADS
        print(f"lmc: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"lmc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmc: interrupted; finished epochs are checkpointed, rerun the same command to resume",
              file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
