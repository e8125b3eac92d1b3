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

__all__ = ["AUGMENTATIONS", "AugmentConfig", "batches_per_epoch", "get_augmentation", *_LAZY]


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches in one epoch of every loader here (image, replica, text): the last one is short
    unless ``drop_last``. Cheap, so a trainer can know its steps without building a loader."""
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
