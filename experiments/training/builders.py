"""The initial model and the optimiser of a run, from its config alone."""
from __future__ import annotations

import torch

from experiments.config import TrainConfig
from lmc import seeds


def build_model(cfg: TrainConfig, input_shape, num_classes: int) -> torch.nn.Module:
    """The initial model: a function of the init seed alone, built on the CPU so that it is
    the same whatever device trains it, without touching the global RNG of the caller."""
    from experiments.models import build_model as build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.init_seed_for_torch(cfg.init_seed))
        return build(cfg.model, tuple(input_shape), num_classes, depth=cfg.depth, width=cfg.width,
                     slope=cfg.slope, channels=cfg.channels, kernel=cfg.kernel, heads=cfg.heads,
                     head_dim=cfg.head_dim, embed_dim=cfg.embed_dim or None, init_scheme=cfg.init_scheme)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fused: one kernel for all parameters instead of ~10 ops per tensor; on a CPU core it makes
    # a small deep net's step about a quarter faster (benchmarks/bench_train.py). Elementwise, so as
    # deterministic as the default implementation, though not bitwise equal to it.
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                weight_decay=cfg.weight_decay, fused=True)
