"""The ``lmc`` command: one subcommand per stage of the study.

Each stage registers its own subcommands (``<package>/cli.py: register``) and imports its
heavy dependencies (torch, ffcv) only inside the handlers, so ``lmc --help`` stays fast and
``analysis`` never pulls in torch. The numerics profile (``lmc.numerics``) is applied first,
before anything can import torch: its environment variables act only before torch loads.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


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
    from app import demo, emergence, reproduce, verify
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
    emergence.register(sub)
    analysis_cli.register(sub)
    return parser


def _apply_numerics(argv: list[str]) -> None:
    """Before argparse and before any import of torch: the profile, or the opt-out asked for
    among the options that precede the command."""
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    numerics.apply("native" if FAST_NUMERICS in argv[:command_at] else None)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input, a full disk or a refused path is one line on stderr and
    exit code 2; anything else keeps its traceback (it is a bug of ours). A command that fails
    on a results root that was new or empty leaves it as it found it (see ``_tidy_new_root``).
    The numerics profile is applied first, before anything imports torch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _apply_numerics(argv)
    except UserError as exc:  # a bad LMC_NUMERICS / LMC_NUMERICS_THREADS
        print(f"lmc: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    root, new_root = None, None
    try:
        from lmc import paths

        root = paths.results_root(getattr(args, "results", None))
        new_root = "missing" if not root.exists() else None if any(root.iterdir()) else "empty"
        rc = args.func(args)
    except UserError as exc:
        _tidy_new_root(root, new_root)
        return _fail(args, str(exc))
    except OSError as exc:
        _tidy_new_root(root, new_root)
        message = _os_error_line(exc)
        if message is None:
            raise
        return _fail(args, message)
    except KeyboardInterrupt:
        print("lmc: interrupted; finished epochs are checkpointed, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except Exception:
        _tidy_new_root(root, new_root)
        raise
    return int(rc or 0)


def _fail(args, message: str) -> int:
    # One line, whatever the message holds (a path with a newline, a chained error).
    print(f"lmc {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _os_error_line(exc: OSError) -> str | None:
    """The one-line message of an OSError the user can act on, or None (then: a traceback)."""
    import errno

    from lmc.io import disk_full_error

    where = exc.filename or "?"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return str(disk_full_error(where))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and exc.filename:
        return (f"cannot write {where}: {exc.strerror}; choose a folder you can write to (--results DIR or "
                f"LMC_RESULTS) or fix its permissions")
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST) and exc.filename:
        return f"{where}: {exc.strerror}; a file stands where lmc needs a folder (or the reverse): move it away"
    return None


def _tidy_new_root(root, new_root: str | None) -> None:
    """After a failed command, put a results root that was new (or empty) back as it was.

    Removed: lock files nobody holds, empty folders, and the LAYOUT_VERSION stamp when nothing
    else is left, and the root folder itself if this command created it. Kept: every
    file with results (a .beton built before the failure is valid and is reused next time);
    a lock file some process still holds (another command working in the same new root).
    Roots that held anything before the command are never touched: their lock files (one per
    run, beside the run folders) are harmless and are reused by the next command.
    """
    if root is None or not new_root or not root.is_dir():
        return
    import contextlib

    from lmc import paths
    from lmc.io import remove_free_lock

    with contextlib.suppress(OSError):
        for folder, _, files in os.walk(root, topdown=False):
            folder = Path(folder)
            if folder.name == ".locks":
                for name in files:
                    if name.endswith(".lock"):
                        remove_free_lock(folder / name)
            if folder != root:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only succeeds when empty
        stamp = paths.layout_file(root)
        if [p.name for p in root.iterdir()] == [stamp.name]:
            stamp.unlink()
        if new_root == "missing" and not any(root.iterdir()):
            root.rmdir()


if __name__ == "__main__":
    sys.exit(main())
