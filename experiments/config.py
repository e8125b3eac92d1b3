"""The hyperparameters of one training run, as one frozen dataclass.

A run is fully determined by this config: the run directory is named by a hash of the fields
that differ from their defaults (``lmc.config.config_hash``), ``config.json`` is written into
it first, and every checkpoint carries it, so a checkpoint alone rebuilds its model.

Defaults are the demo's minimal model: a one-hidden-layer ReLU MLP of width 512 on the
embedded MNIST-5k, SGD with momentum 0.9, lr 0.1, batch 128, 20 epochs, translation by up to
2 pixels. The paper does not give the MNIST MLP width; 512 is our documented choice.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmc import config as cfglib
from lmc.config import ConfigError, param

# Kept here (not imported from the model registry) so that reading or validating a config
# never imports torch; tests check these match the registries.
MODEL_NAMES = ("linear", "mlp", "cnn", "lc_cnn", "toeplitz_mlp", "attention", "vit", "gpt")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
INIT_SCHEMES = ("torch", "kaiming_normal")
# Image presets (pipelines.AUGMENTATIONS), and "offset" for text: a random window offset.
AUGMENTATIONS = ("none", "translate2", "translate2_flip", "flip", "translate_flip", "vit", "offset")
PRUNING = ("none", "platon", "mask")


@dataclass(frozen=True)
class TrainConfig:
    # Data.
    dataset: str = param("mnist5k", "dataset: the .beton files under <results>/betons/<dataset>/")
    augment: str = param("translate2", "augmentation preset (pipelines.AUGMENTATIONS); text: offset (a random "
                                       "window offset) or none", AUGMENTATIONS)
    block_size: int = param(0, "gpt: tokens of context per training window (text datasets)")
    # Model.
    model: str = param("mlp", "model family", MODEL_NAMES)
    depth: int = param(2, "number of weight layers of linear/mlp (1 = logistic regression); blocks of vit/gpt")
    width: int = param(512, "hidden width of linear/mlp; token width of vit/gpt")
    slope: float = param(0.0, "Leaky-ReLU negative slope of mlp (0 = ReLU)")
    channels: int = param(128, "filters Co of cnn / lc_cnn / toeplitz_mlp")
    kernel: int = param(4, "kernel size = stride of cnn / lc_cnn / toeplitz_mlp; patch size of attention/vit")
    heads: int = param(8, "attention heads (attention, vit, gpt)")
    head_dim: int = param(48, "dimension of each attention head")
    embed_dim: int = param(0, "token width D of attention (0 = 648, the width that gives the paper's 1.08 M parameters)")
    mlp_ratio: float = param(4.0, "vit: hidden width of each block's MLP over the token width")
    image_size: int = param(0, "vit: resize the images to image_size x image_size inside the model, before the "
                               "patch embedding (0 = as stored); a ViT-B/16 checkpoint pretrained at 224 needs 224")
    init_scheme: str = param("torch", "initial weights: torch = PyTorch's defaults; kaiming_normal = Kaiming-normal "
                                      "weights (fan-in, ReLU gain) and zero biases on every layer", INIT_SCHEMES)
    init_from: str = param("", "start from these weights instead of the init seed's: a run directory, a .pt file "
                               "or a local Hugging Face folder (heads that do not fit keep the init seed's draw)")
    init_from_sha256: str = param("", "sha256 of init_from's content, filled in by the command line: the run's "
                                      "name changes when the checkpoint does")
    # Optimisation.
    optimizer: str = param("sgd", "optimiser", OPTIMIZERS)
    lr: float = param(0.1, "peak learning rate")
    momentum: float = param(0.9, "SGD momentum (ignored by adam/adamw)")
    weight_decay: float = param(0.0, "L2 weight decay (adamw: decoupled weight decay)")
    adam_beta1: float = param(0.9, "adam/adamw: decay of the first-moment estimate")
    adam_beta2: float = param(0.999, "adam/adamw: decay of the second-moment estimate")
    adam_eps: float = param(1e-8, "adam/adamw: epsilon added to the denominator")
    schedule: str = param("constant", "learning rate after the warm-up: constant, or cosine decay to min_lr at the "
                                      "last step", SCHEDULES)
    min_lr: float = param(0.0, "cosine schedule: the learning rate at the last step")
    warmup_epochs: float = param(0.0, "linear learning-rate warm-up length in epochs (0 = none)")
    warmup_steps: int = param(0, "linear learning-rate warm-up length in steps (instead of warmup_epochs)")
    grad_clip: float = param(0.0, "clip the global gradient norm to this value (0 = off)")
    epochs: int = param(20, "training epochs")
    max_steps: int = param(0, "a step budget: train this many steps (0 = epochs x steps per epoch)")
    batch_size: int = param(128, "batch size (the paper also uses 30000)")
    micro_batches: int = param(1, "gradient accumulation: each step's batch as this many distinct micro-batches")
    # Pruning (seed 001): PLATON during training, or a fixed mask (a lottery ticket) from another run.
    prune: str = param("none", "none; platon (prune during training to prune_ratio); mask (train with mask_from's "
                               "final mask fixed)", PRUNING)
    prune_ratio: float = param(0.2, "platon: the remaining ratio of prunable weights at the end")
    platon_beta1: float = param(0.85, "platon: EMA factor of the importance")
    platon_beta2: float = param(0.95, "platon: EMA factor of the uncertainty")
    platon_delta_t: int = param(10, "platon: steps between maskings")
    platon_initial_warmup: float = param(0.1, "platon: fraction of the steps before pruning starts")
    platon_final_warmup: float = param(0.25, "platon: fraction of the steps at the final ratio")
    mask_from: str = param("", "prune=mask: the run (run:<name> or its directory), mask folder (mask:<name>) "
                               "or mask file whose mask is kept fixed")
    mask_from_sha256: str = param("", "sha256 of mask_from's mask, filled in by the command line")
    # The three seeds, kept apart (lmc.seeds owns how they are used).
    init_seed: int = param(0, "seed of the initial weights")
    order_seed: int = param(0, "seed of the sample order")
    aug_seed: int = param(0, "seed of the random augmentations")
    # Instability analysis: spawn from a parent trained under its own noise.
    spawn_step: int = param(0, "steps the shared parent trains (under the parent seeds) before this run's own noise")
    parent_order_seed: int = param(0, "order seed of the parent phase (used when spawn_step > 0)")
    parent_aug_seed: int = param(0, "augmentation seed of the parent phase (used when spawn_step > 0)")
    replicate: int = param(0, "replicate index: a distinct run with identical settings (same-noise control)")
    # Evaluation and execution.
    eval_train_every: int = param(0, "evaluate on the whole clean train split every N epochs (0 = last epoch only)")

    def __post_init__(self):
        cfglib.coerce_numbers(self)

        def need(cond: bool, key: str, expected: str):
            if not cond:
                raise ConfigError(f"{key}={getattr(self, key)!r} is invalid: expected {expected}")

        for key, choices in (("model", MODEL_NAMES), ("optimizer", OPTIMIZERS), ("augment", AUGMENTATIONS),
                             ("schedule", SCHEDULES), ("init_scheme", INIT_SCHEMES), ("prune", PRUNING)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(choices)}")
        need(self.lr > 0, "lr", "a positive learning rate")
        need(self.epochs >= 1, "epochs", "at least 1")
        need(self.batch_size >= 1, "batch_size", "at least 1")
        need(self.depth >= 1, "depth", "at least 1")
        need(self.width >= 1, "width", "at least 1")
        need(self.embed_dim >= 0, "embed_dim", "a positive token width, or 0 for the paper's 648")
        need(0.0 <= self.slope <= 1.0, "slope", "a Leaky-ReLU slope in [0, 1]")
        need(0.0 <= self.momentum < 1.0, "momentum", "a value in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "a non-negative value")
        need(0.0 <= self.adam_beta1 < 1.0, "adam_beta1", "a value in [0, 1)")
        need(0.0 <= self.adam_beta2 < 1.0, "adam_beta2", "a value in [0, 1)")
        need(self.adam_eps > 0, "adam_eps", "a positive value")
        need(0.0 <= self.min_lr <= self.lr, "min_lr", f"a value in [0, lr={self.lr}]")
        need(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", f"a value in [0, epochs={self.epochs}]")
        need(self.grad_clip >= 0, "grad_clip", "a non-negative value (0 = off)")
        need(self.eval_train_every >= 0, "eval_train_every", "a non-negative integer")
        need(self.block_size >= 0, "block_size", "a non-negative number of tokens")
        need(self.mlp_ratio > 0, "mlp_ratio", "a positive ratio")
        need(self.image_size >= 0, "image_size", "a non-negative size in pixels (0 = the data's own)")
        need(self.max_steps >= 0, "max_steps", "a non-negative number of steps (0 = epochs)")
        need(self.warmup_steps >= 0, "warmup_steps", "a non-negative number of steps")
        need(not (self.warmup_steps and self.warmup_epochs), "warmup_steps",
             "warmup_steps or warmup_epochs, not both")
        need(1 <= self.micro_batches <= self.batch_size, "micro_batches", f"an integer in 1..batch_size={self.batch_size}")
        need(0.0 < self.prune_ratio <= 1.0, "prune_ratio", "a remaining ratio in (0, 1]")
        need(self.prune != "mask" or bool(self.mask_from), "mask_from", "a run directory or mask file when prune=mask")
        need(self.model != "gpt" or self.block_size > 0, "block_size", "a positive context length for model=gpt")
        for key in ("init_seed", "order_seed", "aug_seed", "parent_order_seed", "parent_aug_seed",
                    "spawn_step", "replicate"):
            need(getattr(self, key) >= 0, key, "a non-negative integer")
        need(bool(self.dataset) and "/" not in self.dataset, "dataset", "a dataset name such as mnist5k")

    # -- naming -------------------------------------------------------------------------
    def run_name(self) -> str:
        """Readable prefix + hash of the non-default fields: ``mlp2-sgd-lr0.1-1a2b3c4d5e``."""
        depth = f"{self.depth}" if self.model in ("linear", "mlp") else ""
        return f"{self.model}{depth}-{self.optimizer}-lr{self.lr:g}-{cfglib.config_hash(self)}"

    def parent(self) -> "TrainConfig":
        """The config of the shared parent phase of a spawned run (its own noise = parent seeds)."""
        return cfglib.replace(self, order_seed=self.parent_order_seed, aug_seed=self.parent_aug_seed,
                              spawn_step=0, parent_order_seed=0, parent_aug_seed=0, replicate=0)

    def to_dict(self) -> dict:
        return cfglib.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        # Layout 1 kept the device in the config; it is an execution setting now (provenance).
        return cfglib.from_dict(cls, {k: v for k, v in data.items() if k != "device"})
