"""A run's directory: config.json first, metrics one row per epoch, and nothing stale.

``config.json`` is written before any work, so a directory always says what it is for; a
directory whose config differs from the one asked for, or cannot be read, is refused in one
line. ``metrics.jsonl`` is appended one row per finished epoch; on resume, rows are kept by
their *epoch number* (never by position: a spawned child's first row is not epoch 1), and a
half-written last line from a killed process is cut (``lmc.io.repair_jsonl``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.config import TrainConfig
from lmc import paths
from lmc.config import ConfigError, save_json
from lmc.errors import UserError
from lmc import io
from lmc.io import atomic_write_text, read_jsonl, repair_jsonl


class RunMismatchError(UserError):
    """The run directory holds a config.json that differs from the one asked for."""


def read_config(run: Path) -> TrainConfig:
    """A run's config.json, or a one-line error naming the file and what to do."""
    path = Path(run) / paths.CONFIG
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {run} is not a run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ConfigError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}); remove the run directory {run} and rerun "
                        f"to train it afresh") from None


def prepare(cfg: TrainConfig, root=None) -> Path:
    """Create the run directory and write config.json first; refuse a conflicting one."""
    run = paths.run_dir(cfg.run_name(), root)
    cfg_path = run / paths.CONFIG
    if cfg_path.exists():
        if read_config(run) != cfg:
            raise RunMismatchError(f"{cfg_path} holds a different config; remove {run} or choose other settings")
    else:
        run.mkdir(parents=True, exist_ok=True)
        save_json(cfg.to_dict(), cfg_path)
    return run


def keep_metrics_through(run: Path, epoch: int) -> None:
    """Drop a torn last line, then keep the rows of epochs 1..``epoch`` (in order, one each);
    rewrite only if that changes anything. The caller holds the run's lock."""
    path = Path(run) / paths.METRICS
    repair_jsonl(path)
    if not path.exists():
        return
    kept = {}
    for row in read_jsonl(path):
        if row.get("epoch", 0) <= epoch:
            kept[row["epoch"]] = row  # a repeated epoch: the later row wins (it is the resumed one)
    text = "".join(json.dumps(kept[e], sort_keys=True) + "\n" for e in sorted(kept))
    if text != path.read_text():
        atomic_write_text(path, text)


def remove_stale_tmp(run: Path) -> None:
    """Temporary files of atomic writes that a killed process left behind. Only the holder of
    the run's lock may call this: nobody else can be writing into the directory."""
    io.remove_stale_tmp(run)


def warn(message: str) -> None:
    print(f"lmc: {message}", file=sys.stderr)
