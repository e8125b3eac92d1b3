"""A run's starting point from its config alone: the model, the optimiser, the hooks."""
from __future__ import annotations

import torch

from experiments.config import TrainConfig
from lmc import seeds


def build_model(cfg: TrainConfig, input_shape=None, num_classes: int | None = None, *,
                vocab_size: int | None = None, block_size: int | None = None) -> torch.nn.Module:
    """The initial model: a function of the init seed alone, built on the CPU so that it is
    the same whatever device trains it, without touching the global RNG of the caller. The
    data's shape comes from the task (``task.model_args``): an image shape and a number of
    classes, or a vocabulary and a context length."""
    from experiments.models import build_model as build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.init_seed_for_torch(cfg.init_seed))
        return build(cfg.model, input_shape, num_classes, vocab_size=vocab_size, block_size=block_size,
                     depth=cfg.depth, width=cfg.width, slope=cfg.slope, channels=cfg.channels, kernel=cfg.kernel, heads=cfg.heads, head_dim=cfg.head_dim,
                     embed_dim=cfg.embed_dim or None, mlp_ratio=cfg.mlp_ratio, image_size=cfg.image_size,
                     init_scheme=cfg.init_scheme)


def initial_model(cfg: TrainConfig, task, root=None) -> tuple[torch.nn.Module, dict]:
    """The model a run starts from: the init seed's, overwritten by ``init_from``'s weights when
    the config names some (heads that do not fit keep the seeded draw); and what was loaded."""
    model = build_model(cfg, **task.model_args)
    report = {}
    if cfg.init_from:
        from experiments.training.initial import load_initial

        report = load_initial(model, cfg, root)
    return model, report


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw" and cfg.weight_decay > 0:
        # nanoGPT's rule, which seed 002's GPT runs follow: decay weight matrices and embeddings,
        # never biases or LayerNorm gains.
        params = [{"params": [p for p in params if p.dim() >= 2]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused: one kernel for all parameters instead of ~10 ops per tensor; on a CPU core it makes
    # a small deep net's step about a quarter faster (benchmarks/bench_train.py). Elementwise, so as
    # deterministic as the default implementation, though not bitwise equal to it.
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                weight_decay=cfg.weight_decay, fused=True)


def hooks_for(cfg: TrainConfig, model: torch.nn.Module, total_steps: int, root=None) -> list:
    """The hooks a config asks for (beside a run's own logging and checkpoints), in the order
    they act on a step: a mask first (so clipping sees the masked gradient), then clipping.
    A parent phase gets the same ones, so it trains alike."""
    from experiments.training.hooks import GradClip

    hooks = []
    if cfg.prune == "platon":
        from experiments.pruning.platon import Platon, PlatonConfig

        hooks.append(Platon(model, PlatonConfig(
            final_ratio=cfg.prune_ratio, beta1=cfg.platon_beta1, beta2=cfg.platon_beta2, delta_t=cfg.platon_delta_t,
            initial_warmup=cfg.platon_initial_warmup, final_warmup=cfg.platon_final_warmup), total_steps))
    elif cfg.prune == "mask":
        from experiments.pruning.masks import MaskHook
        from experiments.training.initial import load_mask

        hooks.append(MaskHook(load_mask(cfg, root).to(next(model.parameters()).device)))
    if cfg.grad_clip > 0:
        hooks.append(GradClip(cfg.grad_clip))
    return hooks
