"""LMC pairs: two children from one initialisation, each under its own SGD noise.

A pair is described by one ``TrainConfig`` (the shared settings, including ``init_seed`` and,
for spawning, ``spawn_step`` with the parent's noise in ``order_seed``/``aug_seed``) and the two
children's (order seed, augmentation seed). The children are ordinary runs, so they are
cached, resumed and interpolated like any other.

``same_noise=True`` is the sanity check: both children get child A's seeds (B is a separate
run, ``replicate=1``), so they must end with identical weights and a barrier of exactly 0.
"""
from __future__ import annotations

from pathlib import Path

from experiments.config import TrainConfig
from lmc.config import replace


def child_configs(cfg: TrainConfig, seeds_a: tuple[int, int], seeds_b: tuple[int, int],
                  same_noise: bool = False) -> tuple[TrainConfig, TrainConfig]:
    """The two children's configs. ``cfg.order_seed``/``aug_seed`` become the parent's noise."""
    if same_noise:
        seeds_b = seeds_a
    elif tuple(seeds_a) == tuple(seeds_b):
        raise ValueError(f"both children have seeds {tuple(seeds_a)}: pass different seeds, or same_noise=True "
                         f"for the same-noise control")
    parent = {"parent_order_seed": cfg.order_seed, "parent_aug_seed": cfg.aug_seed} if cfg.spawn_step else {
        "parent_order_seed": 0, "parent_aug_seed": 0}
    a = replace(cfg, order_seed=int(seeds_a[0]), aug_seed=int(seeds_a[1]), replicate=0, **parent)
    b = replace(cfg, order_seed=int(seeds_b[0]), aug_seed=int(seeds_b[1]), replicate=1 if same_noise else 0,
                **parent)
    return a, b


def train_pair(cfg: TrainConfig, seeds_a=(1, 1), seeds_b=(2, 2), *, same_noise: bool = False, root=None,
               **train_options) -> tuple[Path, Path]:
    """Both children, trained (or found finished); ``train_options`` go to ``training.train``."""
    from experiments.training import train

    a, b = child_configs(cfg, seeds_a, seeds_b, same_noise)
    return train(a, root, **train_options), train(b, root, **train_options)
