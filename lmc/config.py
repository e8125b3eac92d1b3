"""Frozen dataclass configs: help texts, strict overrides, hashing, command-line flags.

Every stage of the study has one frozen dataclass of hyperparameters. Each field carries a
short help text (``param(default, "help")``); this module turns them mechanically into

* strict ``key=value`` overrides (the key must exist, the value must parse as the field's type),
* ``--flag`` command-line options,
* a stable hash of the fields that differ from their defaults (open_lth's trick: adding a new
  field with a default keeps every old run's name valid),
* JSON that reads back into the same object.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


from lmc.errors import UserError


class ConfigError(UserError):
    """A config value or key that cannot be accepted. The message says what to do."""


def param(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field with a help text (and optionally a closed set of choices)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict, set)):
        raise TypeError("configs are frozen: use tuples, not mutable defaults")
    return dataclasses.field(default=default, metadata=meta)


def _field_type(cls, field: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    return hints[field.name]


def _parse(value: str, tp, name: str):
    """Parse a command-line string as type ``tp``; a mismatch is a ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(value, inner[0], name)
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        return value
    if origin is tuple:
        parts = [p for p in value.split(",") if p != ""]
        inner = args[0] if args else str
        return tuple(_parse(p, inner, name) for p in parts)
    raise ConfigError(f"{name}: cannot parse values of type {tp}")


def _check_type(value, tp, name: str):
    """Values given as Python objects (JSON, grids) must already have the field's type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], name)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else object
        return tuple(_check_type(v, inner, name) if inner is not Ellipsis else v for v in value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{name}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def coerce_numbers(cfg) -> None:
    """Store an int given for a float field as a float, in place (call from ``__post_init__``):
    ``warmup_epochs=1`` and ``warmup_epochs=1.0`` are one config, and must have one name. Without
    this the constructor kept the int, while a config read back from its JSON (or passed through
    ``replace``) holds the float: the same run trained twice under two names."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, int) and not isinstance(value, bool) and _field_type(type(cfg), f) is float:
            object.__setattr__(cfg, f.name, float(value))


def _check_choices(cfg_cls, name: str, value):
    field = {f.name: f for f in dataclasses.fields(cfg_cls)}[name]
    choices = field.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, choices))}")


def replace(cfg: T, **changes) -> T:
    """``dataclasses.replace`` with strict key and type checks."""
    names = {f.name: f for f in dataclasses.fields(cfg)}
    checked = {}
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {key!r} for {type(cfg).__name__}; known keys: {', '.join(names)}"
            )
        value = _check_type(value, _field_type(type(cfg), names[key]), key)
        _check_choices(type(cfg), key, value)
        checked[key] = value
    return dataclasses.replace(cfg, **checked)


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply ``key=value`` strings; unknown keys and wrong types are refused before anything runs."""
    changes = {}
    names = {f.name: f for f in dataclasses.fields(cfg)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ConfigError(
                f"unknown config key {key!r} for {type(cfg).__name__}; known keys: {', '.join(names)}"
            )
        changes[key] = _parse(value.strip(), _field_type(type(cfg), names[key]), key)
    return replace(cfg, **changes)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def from_dict(cls: type[T], data: dict, *, strict: bool = True) -> T:
    """Rebuild a config from JSON. Missing keys take their defaults (configs grow over time);
    unknown keys are refused when ``strict``, since a key nobody reads is a silent bug."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown and strict:
        raise ConfigError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    return replace(cls(), **{k: v for k, v in data.items() if k in names})


def non_default(cfg) -> dict:
    default = type(cfg)()
    return {k: v for k, v in to_dict(cfg).items() if v != to_dict(default)[k]}


def config_hash(cfg, n: int = 10) -> str:
    """Hash of the fields that differ from their defaults (plus the class name)."""
    payload = json.dumps({"cls": type(cfg).__name__, **non_default(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:n]


def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field, with the field's help, default and choices."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=None, help=f"{f.metadata.get('help', '')} (default: {f.default})")
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        kwargs["metavar"] = tp.__name__.upper() if isinstance(tp, type) else "VALUE"
        if f.metadata.get("choices"):
            kwargs.pop("metavar")
        parser.add_argument(flag, type=str, **kwargs)


def from_args(cls: type[T], ns: argparse.Namespace, base: T | None = None) -> T:
    """Build a config from parsed flags (only those given) on top of ``base`` or the defaults."""
    cfg = base if base is not None else cls()
    given = [f"{f.name}={getattr(ns, f.name)}" for f in dataclasses.fields(cls)
             if getattr(ns, f.name, None) is not None]
    return apply_overrides(cfg, given)


def save_json(obj: dict, path) -> None:
    """Atomic JSON write: a reader never sees half a file."""
    from lmc.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
