"""The ``lmc`` command: one subcommand per stage of the study.

Each stage registers its own subcommands (``<package>/cli.py: register``) and imports its
heavy dependencies (torch, ffcv) only inside the handlers, so ``lmc --help`` stays fast and
``analysis`` never pulls in torch.
"""
from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), as the README promises."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message}\n")


from lmc.errors import UsageError, UserError  # noqa: F401  (UsageError: re-exported for callers)


def build_parser() -> Parser:
    from analysis import cli as analysis_cli
    from beton_builders import cli as beton_cli
    from experiments import cli as experiments_cli
    from app import demo, emergence, reproduce
    from pipelines import cli as pipelines_cli

    parser = Parser(prog="lmc", description=__doc__.splitlines()[0] + " See README.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    demo.register(sub)
    reproduce.register(sub)
    beton_cli.register(sub)
    pipelines_cli.register(sub)
    experiments_cli.register(sub)
    emergence.register(sub)
    analysis_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
