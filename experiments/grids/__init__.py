"""Experiment grids: one readable TOML file per artefact of the paper, at two scales.

A grid file names its artefact, a ``[base]`` of TrainConfig fields, one ``[scales.<scale>]``
table per scale (``notes``: what the scale changes and why; ``config``: TrainConfig fields;
``data.<dataset>``: how that scale obtains the dataset) and one array of tables per axis.
The cells are the product of the axes' entries; each entry has a ``label`` (the paper's
wording, used by the tables), TrainConfig fields, optionally per-scale overrides
(``quick = { batch_size = 171 }``) and ``only = "paper"`` to restrict it to one scale.

A top-level ``pairing`` says how a cell's two children relate: ``same_init`` (default: one
initialisation, two noises, the paper's LMC pairs) or ``different_init`` (child B has its own
init seed; the sweep then aligns B to A by weight matching and interpolates both, see
``alignment.toml``).

Precedence: base < scale config < axis entries (in axis order) < an entry's per-scale overrides.
Every key is checked and every cell's TrainConfig is built (and so validated) when the grid
is loaded: a typo or an invalid value fails before any run starts. Reading a grid never
imports torch.
"""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from beton_builders.prepare import DataSpec
from experiments.config import TrainConfig
from lmc import config as cfglib
from lmc.config import ConfigError

GRID_DIR = Path(__file__).resolve().parent
SCALES = ("paper", "quick")
# artefact -> grid file; Table 4 comes from the runs of Figure 3.
ARTEFACTS = {
    "table1": "table1.toml", "table2": "table2.toml", "table3": "table3.toml", "table4": "figure3.toml",
    "figure1": "figure1.toml", "figure2": "figure2.toml", "figure3": "figure3.toml", "figure5": "figure5.toml",
    "ablation_table2": "ablation_table2.toml", "ablation_confirm": "ablation_confirm.toml",
    "alignment": "alignment.toml",
}
# How a cell's two children relate: one init and two noises (the paper's LMC pairs), or two
# inits, aligned by weight matching after interpolation (experiments.align; app.sweep).
PAIRINGS = ("same_init", "different_init")
# The sweep owns the seeds (``--seeds``): a grid that set them would break the pairing.
SEED_KEYS = ("init_seed", "order_seed", "aug_seed", "parent_order_seed", "parent_aug_seed", "replicate")
_TOP_KEYS = {"artefact", "title", "layout", "axes", "outputs", "kind", "base", "scales", "counts", "num_alphas",
             "pairing"}
_SCALE_KEYS = {"notes", "config", "data", "batch_sizes", "known_gaps"}
_DATA_KEYS = {"name", "builder", "src", "train_subset"}
_ENTRY_KEYS = {"label", "only", *SCALES}
# Axis names become columns of the result tables beside the config's and the barriers' columns.
_RESERVED_AXES = {"split", "cell", "pair", "status", "grid", "scale", "unstable", "paper", "mean", "std", "n"}


@dataclass(frozen=True)
class Cell:
    """One cell of an artefact: the labels along each axis and the pair's shared config."""
    labels: tuple[tuple[str, str], ...]   # (axis, label) in axis order
    config: TrainConfig

    @property
    def key(self) -> str:
        return " | ".join(label for _, label in self.labels)


@dataclass(frozen=True)
class Grid:
    artefact: str
    title: str
    layout: str
    scale: str
    notes: str
    path: Path
    axes: tuple[str, ...] = ()
    cells: tuple[Cell, ...] = ()
    data: dict = field(default_factory=dict)       # dataset -> DataSpec
    outputs: tuple[str, ...] = ()
    kind: str = "pairs"                           # "pairs" (train + interpolate) or "counts"
    counts: dict = field(default_factory=dict)
    num_alphas: int = 11
    # cell ("row label / column label") -> the likely reason it lands off the paper (measured, in
    # the grid's notes or docs); `lmc reproduce` and `lmc report` print it beside such a cell.
    known_gaps: dict = field(default_factory=dict)
    pairing: str = "same_init"                    # one of PAIRINGS

    def datasets(self) -> list[str]:
        """The dataset folders the runs of this grid read, in first-use order."""
        return list(dict.fromkeys(cell.config.dataset for cell in self.cells))

    def spec_for(self, dataset: str) -> DataSpec:
        for spec in self.data.values():
            if spec.name == dataset:
                return spec
        return DataSpec(name=dataset, builder=dataset)


def grid_path(artefact: str) -> Path:
    """The grid file of an artefact name, or the path of a user's own grid file."""
    if artefact in ARTEFACTS:
        return GRID_DIR / ARTEFACTS[artefact]
    path = Path(artefact).expanduser()
    if path.suffix == ".toml" and path.is_file():
        return path
    raise ConfigError(f"unknown artefact {artefact!r}; valid: {', '.join(ARTEFACTS)} (or a path to a .toml grid)")


def _check_keys(where: str, table: dict, allowed: set) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _config_fields(where: str, table: dict) -> dict:
    """TrainConfig fields of a table: names must exist, seeds belong to the sweep."""
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown config key(s) {unknown}; TrainConfig keys: {', '.join(sorted(known))}")
    seeds = sorted(set(table) & set(SEED_KEYS))
    if seeds:
        raise ConfigError(f"{where}: {seeds} must not be set in a grid; the seeds of each pair come from --seeds")
    return dict(table)


def _data_spec(where: str, dataset: str, table: dict) -> DataSpec:
    _check_keys(where, table, _DATA_KEYS)
    subset = table.get("train_subset", 0)
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 0:
        raise ConfigError(f"{where}.train_subset={subset!r} is invalid: expected a non-negative integer")
    builder = table.get("builder", dataset)
    default_name = dataset if not subset else f"{dataset}_sub{subset}"
    return DataSpec(name=table.get("name", default_name), builder=builder, src=table.get("src"),
                    train_subset=subset)


def _scaled_batch(where: str, batch_sizes: dict, merged: dict) -> int:
    """A scale's batch size for a cell: ``batch_sizes.<optimizer>."<paper batch>"`` (see table1.toml)."""
    optimizer = merged.get("optimizer", TrainConfig.optimizer)
    paper = merged.get("batch_size", TrainConfig.batch_size)
    table = batch_sizes.get(optimizer, {})
    if str(paper) not in table:
        raise ConfigError(f"{where}: no batch size for optimizer {optimizer!r} and batch_size {paper}; "
                          f"it maps {dict(batch_sizes)}")
    return table[str(paper)]


def load_grid(artefact: str, scale: str, overrides: tuple[str, ...] = ()) -> Grid:
    """Read and validate a grid at one scale; ``overrides`` (``key=value``) apply to every cell."""
    path = grid_path(artefact)
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    axes = tuple(raw.get("axes", []))
    clash = sorted(set(axes) & (set(TrainConfig.__dataclass_fields__) | _RESERVED_AXES | _TOP_KEYS))
    if clash:
        raise ConfigError(f"{path}: axis name(s) {clash} clash with config or result columns; name the axis "
                          f"for what it varies, in plural, e.g. 'depths', 'rates'")
    # Known names only: an unknown table is a typo'd axis or key, which would silently do nothing.
    _check_keys(str(path), raw, _TOP_KEYS | set(axes))
    for key in ("artefact", "title", "layout"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"{path}: missing or non-string {key!r}")
    scales = raw.get("scales", {})
    if scale not in scales:
        raise ConfigError(f"{path}: no [scales.{scale}] table; it defines {sorted(scales)}")
    sc = scales[scale]
    _check_keys(f"{path} [scales.{scale}]", sc, _SCALE_KEYS)
    kind = raw.get("kind", "pairs")
    common = dict(artefact=raw["artefact"], title=raw["title"], layout=raw["layout"], scale=scale,
                  notes=sc.get("notes", ""), path=path, outputs=tuple(raw.get("outputs", [raw["artefact"]])),
                  kind=kind)
    if kind == "counts":
        return Grid(**common, counts=dict(raw.get("counts", {})))
    if kind != "pairs":
        raise ConfigError(f"{path}: kind={kind!r} is invalid: expected 'pairs' or 'counts'")

    base = _config_fields(f"{path} [base]", raw.get("base", {}))
    base.update(_config_fields(f"{path} [scales.{scale}.config]", sc.get("config", {})))
    data = {name: _data_spec(f"{path} [scales.{scale}.data.{name}]", name, t) for name, t in sc.get("data", {}).items()}
    if not axes:
        raise ConfigError(f"{path}: 'axes' must name at least one array of cells")
    entries = []
    for axis in axes:
        items = raw.get(axis)
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{path}: axis {axis!r} has no [[{axis}]] entries")
        kept = []
        for i, entry in enumerate(items):
            where = f"{path} [[{axis}]] #{i + 1}"
            if not isinstance(entry.get("label"), str):
                raise ConfigError(f"{where}: every entry needs a string 'label'")
            if entry.get("only", scale) not in SCALES:
                raise ConfigError(f"{where}: only={entry['only']!r} is invalid: expected one of {SCALES}")
            fields = _config_fields(where, {k: v for k, v in entry.items() if k not in _ENTRY_KEYS})
            fields.update(_config_fields(f"{where} ({scale})", entry.get(scale, {})))
            if entry.get("only", scale) == scale:
                kept.append((entry["label"], fields))
        entries.append(kept)

    batch_sizes = sc.get("batch_sizes", {})
    cells = []
    for combo in itertools.product(*entries):
        merged = dict(base)
        for _, fields in combo:
            merged.update(fields)
        if batch_sizes:
            merged["batch_size"] = _scaled_batch(f"{path} [scales.{scale}.batch_sizes]", batch_sizes, merged)
        if merged.get("dataset") in data:
            merged["dataset"] = data[merged["dataset"]].name
        cfg = cfglib.replace(TrainConfig(), **merged)  # one replace: validated once, as a whole
        if overrides:
            cfg = cfglib.apply_overrides(cfg, list(overrides))
        cells.append(Cell(tuple((axis, label) for axis, (label, _) in zip(axes, combo)), cfg))
    num_alphas = raw.get("num_alphas", 11)
    if isinstance(num_alphas, bool) or not isinstance(num_alphas, int) or num_alphas < 2:
        raise ConfigError(f"{path}: num_alphas={num_alphas!r} is invalid: expected an integer >= 2")
    pairing = raw.get("pairing", "same_init")
    if pairing not in PAIRINGS:
        raise ConfigError(f"{path}: pairing={pairing!r} is invalid: expected one of {PAIRINGS}")
    if pairing == "different_init" and raw["layout"] != "alignment":
        # Its pairs have a barrier before and after alignment: only that layout keeps them apart.
        raise ConfigError(f"{path}: pairing='different_init' needs layout='alignment', got {raw['layout']!r}")
    gaps = sc.get("known_gaps", {})
    names = {" / ".join(label for _, label in c.labels) for c in cells}
    unknown = sorted(k for k in gaps if k not in names)
    if unknown or not all(isinstance(v, str) for v in gaps.values()):
        raise ConfigError(f"{path} [scales.{scale}.known_gaps]: {unknown or 'a value'} is not a cell of this grid "
                          f"with a string reason; keys are the cell's labels joined by ' / ', e.g. "
                          f"{next(iter(sorted(names)))!r}")
    return Grid(**common, axes=axes, cells=tuple(cells), data=data, num_alphas=num_alphas, pairing=pairing,
                known_gaps=dict(gaps))


def pair_seeds(index: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """(init seed, child A's (order, aug), child B's (order, aug)) of pair ``index``.

    Pair 0 is the demo's pair (init 0, children (1, 1) and (2, 2)); every pair has its own
    init seed and its own child seeds, so ``--seeds N`` gives N independent pairs per cell.
    lmc.seeds hashes each number with its purpose, so order = aug is no correlation.
    """
    return index, (2 * index + 1, 2 * index + 1), (2 * index + 2, 2 * index + 2)


def describe(artefact: str) -> list[dict]:
    """One row per scale of an artefact: what ``lmc reproduce --list`` prints."""
    rows = []
    for scale in SCALES:
        grid = load_grid(artefact, scale)
        rows.append({"artefact": artefact, "scale": scale, "grid": grid.path.name,
                     "cells": len(grid.cells) if grid.kind == "pairs" else 0, "notes": grid.notes})
    return rows
