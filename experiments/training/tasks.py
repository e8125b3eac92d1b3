"""Tasks: how a run's data becomes batches, a batch becomes a loss, and a model is evaluated.

The loop (``loop.py``) knows nothing of images or labels; it asks its task for the batches
of an epoch, for one forward/backward pass per step, and for the row of running metrics at
the end of an epoch. Interpolation asks the same task to evaluate a model on a whole split,
so a run and its interpolation measure the same way. Image classification is the study's
task; language modelling plugs in beside it with the same four methods.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from experiments.config import TrainConfig
from lmc import paths
from lmc.errors import UserError
from pipelines import batches_per_epoch

SPLITS = ("train", "test")


class MissingDataError(UserError):
    """A run's .beton files are not there: the trainer never builds data itself."""


def beton_paths(dataset: str, root=None, splits=SPLITS) -> dict[str, Path]:
    """The .betons a run reads; a missing one is a one-line error naming the command that builds it."""
    betons = {s: paths.beton_path(dataset, s, root) for s in splits}
    for split, beton in betons.items():
        if not (beton.exists() and paths.manifest_path(beton).exists()):
            raise MissingDataError(f"dataset {dataset!r} has no {split} split under {beton.parent} (.beton and "
                                   f"manifest); build it first: `lmc beton build {dataset}`")
    return betons


class ImageClassification:
    """Cross-entropy on seeded, augmented image batches; loss and accuracy on clean splits.

    Everything heavy is built on first use: interpolation, which only evaluates, never builds
    the training loader, and every split is decoded once per process (``pipelines.load_split``).
    """

    def __init__(self, cfg: TrainConfig, betons: dict[str, Path], device: torch.device):
        from lmc.manifest import read_manifest

        from experiments.models import IMAGE_MODELS
        from pipelines import AUGMENTATIONS

        if cfg.model not in IMAGE_MODELS:
            raise UserError(f"dataset {cfg.dataset!r} holds images: model {cfg.model!r} reads text; choose one of "
                            f"{', '.join(IMAGE_MODELS)}")
        if cfg.augment not in AUGMENTATIONS:
            raise UserError(f"augment={cfg.augment!r} is not an image augmentation; choose one of "
                            f"{', '.join(AUGMENTATIONS)}")
        self.cfg, self.betons, self.device = cfg, betons, device
        # Every split is normalised with the training split's statistics, as during training.
        self.manifest = read_manifest(betons["train"])
        h, w, c = self.manifest["image_shape"]
        self.model_args = {"input_shape": (c, h, w), "num_classes": self.manifest["num_classes"]}
        self._loader = None

    # -- training -------------------------------------------------------------------------
    @property
    def loader(self):
        if self._loader is None:
            from pipelines import make_loader

            cfg = self.cfg
            self._loader = make_loader(self.betons["train"], batch_size=cfg.batch_size, order_seed=cfg.order_seed,
                                       aug_seed=cfg.aug_seed, augment=cfg.augment, device=self.device)
        return self._loader

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (the last one may be short), known without building the loader."""
        return batches_per_epoch(int(self.manifest["num_samples"]), self.cfg.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.loader.iter_epoch(epoch):
            yield x, y

    def new_running(self) -> dict:
        zeros = dict(device=self.device)
        return {"loss_sum": torch.zeros((), dtype=torch.float64, **zeros),
                "correct": torch.zeros((), dtype=torch.int64, **zeros), "seen": 0}

    def forward_backward(self, model: torch.nn.Module, batch, running: dict) -> None:
        """One step's gradient (the caller zeroed the old one), and the running metrics."""
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        running["loss_sum"] += loss.detach().double() * len(y)
        running["correct"] += (logits.detach().argmax(1) == y).sum()
        running["seen"] += len(y)

    def summarize(self, running: dict) -> dict:
        seen = max(running["seen"], 1)
        return {"train_loss_running": running["loss_sum"].item() / seen,
                "train_acc_running": running["correct"].item() / seen}

    def describe_data(self) -> dict:
        """What decides the batches, for provenance and the loader digest."""
        from lmc.manifest import manifest_hash

        return {"data_manifest": manifest_hash(self.betons["train"])}

    def loader_digest(self, epochs: int) -> list:
        from pipelines import loader_digest

        cfg = self.cfg
        return loader_digest(self.betons["train"], order_seed=cfg.order_seed, aug_seed=cfg.aug_seed,
                             augment=cfg.augment, epochs=epochs, batch_size=cfg.batch_size)

    # -- evaluation -----------------------------------------------------------------------
    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        from pipelines import load_split

        return load_split(self.betons[name], device=self.device)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int = 1000) -> dict:
        """Mean cross-entropy and accuracy of ``model`` on the clean split (decoded once)."""
        from pipelines import normalize

        images, labels = self.split(split)
        was_training = model.training
        model.eval()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size], self.manifest)
            y = labels[start:start + batch_size]
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
        model.train(was_training)
        n = len(images)
        return {"loss": loss_sum / n, "accuracy": correct / n, "error": 1.0 - correct / n}


def task_for(cfg: TrainConfig, root=None, device: torch.device | None = None):
    """The task of a run's config, by what its dataset holds: images or tokens."""
    from lmc.manifest import manifest_kind, read_manifest

    betons = beton_paths(cfg.dataset, root)
    device = device or torch.device("cpu")
    if manifest_kind(read_manifest(betons["train"])) == "tokens":
        from experiments.training.language_task import LanguageModelling

        return LanguageModelling(cfg, betons, device)
    return ImageClassification(cfg, betons, device)
