"""Language modelling (seed 002): next-token cross-entropy on seeded token windows.

The same four methods as image classification (``tasks.py``), so the loop, checkpoints,
spawning, pairs and interpolation serve text unchanged. What differs:

* batches are (x, y) = window[:-1], window[1:] of ``block_size + 1`` tokens; the order seed
  picks the windows of each batch, the augmentation seed ``offset`` a random offset of each
  window inside its stored stretch (``augment=none``: no offset);
* a step's batch is cut into ``micro_batches`` distinct micro-batches whose gradients add up to
  the full batch's (true gradient accumulation, ``experiments.language.accumulate``);
* evaluation covers every non-overlapping window of the test split, in order, and a fixed,
  evenly spaced subset of as many train windows (``pipelines.text.eval_windows``): mean
  cross-entropy, perplexity and token error, the last being the "error" of the barriers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from experiments.config import TrainConfig
from lmc.errors import UserError

EVAL_BATCH_SIZE = 256
TEXT_AUGMENTATIONS = ("offset", "none")


class LanguageModelling:
    def __init__(self, cfg: TrainConfig, betons: dict[str, Path], device: torch.device):
        from lmc.manifest import read_manifest

        if cfg.model != "gpt":
            raise UserError(f"dataset {cfg.dataset!r} holds text: train a language model on it (--model gpt), "
                            f"not {cfg.model!r}")
        if cfg.augment not in TEXT_AUGMENTATIONS:
            raise UserError(f"augment={cfg.augment!r} is an image augmentation; a text dataset takes "
                            f"augment=offset (a random window offset, seeded by aug_seed) or none")
        self.cfg, self.betons, self.device = cfg, betons, device
        self.manifest = read_manifest(betons["train"])
        if cfg.block_size > int(self.manifest["stride"]):
            raise UserError(f"block_size={cfg.block_size} exceeds the stride {self.manifest['stride']} of "
                            f"{betons['train']}; rebuild it with --stride {cfg.block_size} or more")
        self.model_args = {"vocab_size": int(self.manifest["vocab_size"]), "block_size": cfg.block_size}
        self._loader, self._windows = None, {}

    # -- training -------------------------------------------------------------------------
    @property
    def loader(self):
        if self._loader is None:
            from pipelines.text import make_text_loader

            cfg = self.cfg
            self._loader = make_text_loader(self.betons["train"], batch_size=cfg.batch_size, block_size=cfg.block_size,
                                            order_seed=cfg.order_seed, aug_seed=cfg.aug_seed,
                                            random_offset=cfg.augment == "offset", device=self.device, drop_last=True)
        return self._loader

    @property
    def steps_per_epoch(self) -> int:
        """Full batches of stored windows per epoch (the last, short batch is dropped)."""
        steps = int(self.manifest["num_samples"]) // self.cfg.batch_size
        if steps < 1:
            raise UserError(f"batch_size={self.cfg.batch_size} exceeds the {self.manifest['num_samples']} windows of "
                            f"{self.betons['train']}; use a smaller batch")
        return steps

    def batches(self, epoch: int):
        for x, y, _ in self.loader.iter_epoch(epoch):
            yield x, y

    def new_running(self) -> dict:
        return {"loss_sum": torch.zeros((), dtype=torch.float64, device=self.device), "seen": 0}

    def forward_backward(self, model: torch.nn.Module, batch, running: dict) -> None:
        from experiments.language import accumulate, micro_batches

        x, y = batch
        loss = accumulate(model, micro_batches(x, y, self.cfg.micro_batches))
        running["loss_sum"] += loss.double() * y.numel()
        running["seen"] += y.numel()

    def summarize(self, running: dict) -> dict:
        return {"train_loss_running": running["loss_sum"].item() / max(running["seen"], 1)}

    def describe_data(self) -> dict:
        from lmc.manifest import manifest_hash

        return {"data_manifest": manifest_hash(self.betons["train"])}

    def loader_digest(self, epochs: int) -> list:
        from pipelines import loader_digest

        cfg = self.cfg
        return loader_digest(self.betons["train"], order_seed=cfg.order_seed, aug_seed=cfg.aug_seed,
                             augment=cfg.augment, epochs=epochs, batch_size=cfg.batch_size, drop_last=True,
                             block_size=cfg.block_size)

    # -- evaluation -----------------------------------------------------------------------
    def windows(self, split: str) -> torch.Tensor:
        """Every test window; as many evenly spaced train windows (a fixed subset, for speed)."""
        if split not in self._windows:
            from pipelines.text import eval_windows

            block = self.cfg.block_size
            if split == "test":
                self._windows[split] = eval_windows(self.betons["test"], block)
            else:
                self._windows[split] = eval_windows(self.betons["train"], block,
                                                    max_windows=len(self.windows("test")))
        return self._windows[split]

    def evaluate(self, model: torch.nn.Module, split: str) -> dict:
        from experiments.language import evaluate_lm

        return evaluate_lm(model, self.windows(split).to(self.device), batch_size=EVAL_BATCH_SIZE)
