"""What a seeded augmentation does, as a frozen config, and the named presets of the study.

This module is light (no torch, no ffcv) so configs can be built, validated and hashed
anywhere, e.g. by ``lmc --help`` or by the analysis stage.

Each sample goes through the operations in one fixed order: random crop of ``crop_size`` and
resize back to full size, horizontal flip, translation, colour jitter. Every random draw is a
pure function of (augmentation seed, epoch, dataset index, the op); see ``pipelines/kernel.py``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lmc.config import ConfigError, param


@dataclass(frozen=True)
class AugmentConfig:
    translate: int = param(0, "max shift in pixels along each axis (the padding of a pad-and-crop)")
    fill: int = param(0, "grey level 0..255 of the pixels uncovered by a translation")
    flip_prob: float = param(0.0, "probability of a horizontal flip")
    crop_size: int = param(0, "side of a random square crop resized back to the full image; 0 = off")
    brightness: float = param(0.0, "brightness factor drawn from [max(0, 1-b), 1+b]")
    contrast: float = param(0.0, "contrast factor drawn from [max(0, 1-c), 1+c]")
    saturation: float = param(0.0, "saturation factor drawn from [max(0, 1-s), 1+s]")
    hue: float = param(0.0, "hue shift drawn from [-h, h], in turns (h <= 0.5)")

    def __post_init__(self):
        for name in ("translate", "fill", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"augment {name} must be an integer, got {value!r}")
        if self.translate < 0:
            raise ConfigError(f"augment translate (padding) must be >= 0 pixels, got {self.translate}")
        if not 0 <= self.fill <= 255:
            raise ConfigError(f"augment fill must be a grey level in 0..255, got {self.fill}")
        if self.crop_size < 0:
            raise ConfigError(f"augment crop_size must be >= 0 (0 = no crop), got {self.crop_size}")
        for name in ("flip_prob", "brightness", "contrast", "saturation", "hue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"augment {name} must be a finite number, got {value!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"augment flip_prob is a probability and must lie in [0, 1], got {self.flip_prob}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"augment {name}={value} gives the interval [{1 - value}, {1 + value}], "
                                  f"which is not a valid range of factors; use a value >= 0")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"augment hue={self.hue} gives the interval [{-self.hue}, {self.hue}]; "
                              f"hue shifts must lie in [-0.5, 0.5] turns, so use 0 <= hue <= 0.5")

    @property
    def jitter(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def is_identity(self) -> bool:
        return (self.translate == 0 and self.flip_prob == 0 and self.crop_size == 0 and not self.jitter)

    def check_image(self, shape) -> None:
        """Refuse a config that makes no sense for images of ``shape`` (H, W, C)."""
        h, w = int(shape[0]), int(shape[1])
        if self.crop_size > min(h, w):
            raise ConfigError(f"augment crop_size={self.crop_size} exceeds the {h}x{w} images; "
                              f"use a crop of at most {min(h, w)}")
        if self.translate >= min(h, w):
            raise ConfigError(f"augment translate={self.translate} would shift {h}x{w} images out of view; "
                              f"use at most {min(h, w) - 1}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The study's presets. Digits get translations without flips (a flipped 2 is not a 2); the
# CIFAR preset is the paper's Figure 4; 'vit' is the ViT write-up's recipe. 'translate2_flip' and
# 'flip' exist for the ablation of MNIST's unstated augmentation (docs/reproduce.md).
AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "translate2": AugmentConfig(translate=2),
    "translate2_flip": AugmentConfig(translate=2, flip_prob=0.5),
    "translate_flip": AugmentConfig(translate=4, flip_prob=0.5),
    "flip": AugmentConfig(flip_prob=0.5),
    "vit": AugmentConfig(crop_size=24, flip_prob=0.5, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
}


def get_augmentation(name_or_cfg) -> AugmentConfig:
    """A preset by name, or an ``AugmentConfig`` / dict of its fields, validated."""
    if isinstance(name_or_cfg, AugmentConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, str):
        try:
            return AUGMENTATIONS[name_or_cfg]
        except KeyError:
            raise ConfigError(f"unknown augmentation {name_or_cfg!r}; known: {', '.join(AUGMENTATIONS)}") from None
    if isinstance(name_or_cfg, dict):
        names = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(name_or_cfg) - names)
        if unknown:
            raise ConfigError(f"unknown augmentation keys {unknown}; known: {', '.join(sorted(names))}")
        return AugmentConfig(**name_or_cfg)
    raise ConfigError(f"augment must be a preset name ({', '.join(AUGMENTATIONS)}), an AugmentConfig "
                      f"or a dict, got {type(name_or_cfg).__name__}")


def augmentation_name(cfg: AugmentConfig) -> str | None:
    """The preset's name when ``cfg`` is one, for readable provenance."""
    return next((name for name, preset in AUGMENTATIONS.items() if preset == cfg), None)
