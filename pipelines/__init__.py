"""The seeded loader stage: .beton -> batches, with order and augmentation seeded apart.

Importing this package is cheap (no torch, no ffcv); the loader's names load on first use.
"""
from __future__ import annotations

from pipelines.augment import AUGMENTATIONS, AugmentConfig, get_augmentation

_LAZY = {
    "make_loader": "pipelines.loader", "SeededLoader": "pipelines.loader", "load_split": "pipelines.loader",
    "normalize": "pipelines.normalization", "loader_digest": "pipelines.digest",
    "make_replica_loader": "pipelines.device_data", "ReplicaLoader": "pipelines.device_data",
    "replica_digest": "pipelines.device_data", "augment_on_device": "pipelines.device_augment",
    "make_text_loader": "pipelines.text", "eval_windows": "pipelines.text", "load_tokens": "pipelines.text",
}

__all__ = ["AUGMENTATIONS", "AugmentConfig", "get_augmentation", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
