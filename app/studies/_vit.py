"""What the two ViT studies (``vit_lmc``, ``vit_prune``) share: their scales, their data, the
pretrained starting point, and their pairs as ``app.sweep`` tasks.

Seed 001 fine-tunes a ViT-B/16 pretrained on ImageNet-21k on CIFAR-10 (AdamW, lr 2e-4, 8
epochs). Two scales:

* ``quick`` (this CPU): a small ViT (patch 8, 4 blocks, width 128) is first *pretrained* here,
  offline, on Tiny-ImageNet's 10,000 validation images shrunk to 32x32 (200 classes; the last 5
  of each class held out as its test split; ``beton_builders/derived.py``), then fine-tuned on
  the exact CIFAR-10 5k subset: a real transfer setting, small. The pretraining run is an
  ordinary hash-named run, trained once and reused by both studies.
* ``paper``: seed 001's setting: ``--checkpoint`` names a local Hugging Face ViT folder (an
  ImageNet-21k ViT-B/16 saved with ``save_pretrained``); its architecture is read from the
  folder and its 224x224 inputs are made inside the model (``image_size``); full CIFAR-10 from
  the data root. Nothing is downloaded: without the folder or the data, ``check`` stops before
  anything is written, naming the file it needs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from beton_builders.prepare import DataSpec
from experiments.config import TrainConfig
from lmc.config import replace
from lmc.errors import UserError

CIFAR10_5K = DataSpec("cifar10_5k", "npz", src="cifar10-subset-5k/cifar10_subset_5k.npz")
TINY_IMAGENET_VAL32 = DataSpec("tiny_imagenet_val32", "tiny_imagenet", src="tiny-imagenet-200-val.tar",
                               options=(("from_split", "test"), ("size", 32), ("test_per_class", 5)))
CIFAR10 = DataSpec("cifar10", "cifar10")

# The small ViT of the quick scale: 17 tokens of width 128, 0.56 M parameters (10 classes), 0.52 M prunable.
QUICK_VIT = dict(model="vit", kernel=8, depth=4, width=128, heads=4, mlp_ratio=2.0)


@dataclass(frozen=True)
class Scale:
    name: str
    notes: str
    finetune: TrainConfig                  # the pairs' shared settings (init seed and noise set per pair)
    data: DataSpec                         # the fine-tuning dataset
    pretrain: TrainConfig | None = None    # trained here first (quick); None: ``checkpoint`` is the start
    pretrain_data: DataSpec | None = None
    checkpoint: str = ""                   # a local Hugging Face folder (paper)
    spawn_steps: tuple[int, ...] = ()      # emergence of LMC for the random init (vit_lmc)
    prune_ratios: tuple[float, ...] = (0.2, 0.05)
    prune_epochs: int = 8                  # PLATON and the masked retraining
    extra: dict = field(default_factory=dict)


QUICK = Scale(
    name="quick",
    notes="a small ViT (patch 8, 4 blocks, width 128, MLP ratio 2, 0.56 M parameters) pretrained here for 30 epochs on "
          "Tiny-ImageNet's 10k val images at 32x32 (9k train / 1k held out, 200 classes), then fine-tuned on "
          "the exact CIFAR-10 5k subset (4k train / 1k test): AdamW lr 1e-3 (1 warm-up epoch, cosine), 16 "
          "epochs, batch 128, augment vit; PLATON and masked retraining 8 epochs; emergence at k = 0, 64 (2 epochs)",
    # lr 1e-3 and 16 epochs, not seed 001's 2e-4 and 8: its 8 epochs of 50k images are thousands of
    # steps (6,250 at batch 64); the 4k-image subset gives 32 steps an epoch, so more steps at a higher
    # rate (our choice, not tuned; docs/vit.md, "Scales", says what it bought).
    finetune=TrainConfig(dataset=CIFAR10_5K.name, **QUICK_VIT, augment="vit", optimizer="adamw", lr=1e-3,
                         weight_decay=0.05, schedule="cosine", warmup_epochs=1.0, batch_size=128, epochs=16),
    data=CIFAR10_5K,
    pretrain=TrainConfig(dataset=TINY_IMAGENET_VAL32.name, **QUICK_VIT, augment="vit", optimizer="adamw", lr=1e-3,
                         weight_decay=0.05, schedule="cosine", min_lr=1e-4, warmup_epochs=2, batch_size=128,
                         epochs=30),
    pretrain_data=TINY_IMAGENET_VAL32,
    # Two points: the emergence children cost a fine-tuning run each (the k = 0 pair is the random
    # row's own); more steps did not fit the quick budget on this CPU.
    spawn_steps=(0, 64),
    prune_epochs=8,  # half the fine-tuning, as seed 001 (PLATON over 4 of its 8 epochs)
)

PAPER_NOTES = ("seed 001: ViT-B/16 from a local ImageNet-21k checkpoint (--checkpoint PATH, a Hugging Face "
               "folder), inputs resized to 224 inside the model, full CIFAR-10 from the data root, AdamW lr 2e-4, "
               "8 epochs (PLATON and masked retraining 4), batch 64; needs a GPU")
# Overridable by tests (a tiny scale that runs in seconds): name -> Scale or a factory of args.
SCALES: dict = {"quick": QUICK}


def paper_scale(checkpoint: str | None) -> Scale:
    """Seed 001's setting, from the checkpoint folder's own architecture; one line when it is missing."""
    from experiments.models.hf_vit import CheckpointError, vit_config_from_hf

    if not checkpoint:
        raise UserError("--scale paper starts from a pretrained ViT-B/16: pass --checkpoint PATH, a local Hugging "
                        "Face folder (config.json + model.safetensors, e.g. google/vit-base-patch16-224-in21k saved "
                        "with save_pretrained); nothing is downloaded")
    folder = Path(checkpoint).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise UserError(f"--checkpoint {checkpoint}: {folder / 'config.json'} does not exist; give the folder "
                        f"that save_pretrained wrote (config.json + model.safetensors or pytorch_model.bin)")
    try:
        vit = vit_config_from_hf(folder, num_classes=10)
    except (CheckpointError, ValueError) as exc:
        raise UserError(f"--checkpoint {checkpoint}: {exc}") from None
    arch = dict(model="vit", kernel=vit.patch, depth=vit.depth, width=vit.width, heads=vit.heads,
                mlp_ratio=vit.mlp_ratio, image_size=vit.input_shape[1])
    return Scale(name="paper", notes=PAPER_NOTES, data=CIFAR10, checkpoint=str(folder),
                 finetune=TrainConfig(dataset=CIFAR10.name, **arch, augment="vit", optimizer="adamw", lr=2e-4,
                                      batch_size=64, epochs=8),
                 spawn_steps=(0, 250, 1000, 3000), prune_epochs=4)


def scale_for(args) -> Scale:
    """The scale of ``lmc reproduce``'s arguments, validated (nothing is written)."""
    if args.scale == "paper" and "paper" not in SCALES:
        scale = paper_scale(getattr(args, "checkpoint", None))
    else:
        scale = SCALES[args.scale]
        scale = scale(args) if callable(scale) else scale
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    _check_data(scale, args.results)
    return scale


def _check_data(scale: Scale, root) -> None:
    """Full CIFAR-10 is not on every machine: say which file to place where, before any run."""
    from beton_builders.cifar import CIFAR10 as builder
    from lmc import paths

    if scale.data.builder != "cifar10" or paths.manifest_path(paths.beton_path(scale.data.name, "test", root)).exists():
        return
    if not any(p.exists() for p in builder.default_src()):
        raise UserError(f"--scale {scale.name} needs the full CIFAR-10: place {builder.archive.filename} (or its "
                        f"{builder.folder}/ folder) in {paths.data_root()} (or set LMC_DATA_ROOT); nothing is "
                        f"downloaded")


# -- stages ---------------------------------------------------------------------------------------

def prepare_data(scale: Scale, root) -> dict:
    from beton_builders.prepare import data_summary, ensure_dataset

    used = {}
    for spec in (scale.pretrain_data, scale.data):
        if spec is not None:
            ensure_dataset(spec, root)
            used[spec.name] = data_summary(spec.name, root)
    return used


def pretrained_start(scale: Scale, root, device: str) -> str:
    """The ``init_from`` of the pretrained rows: the pretraining run (trained once), or the checkpoint."""
    if scale.pretrain is None:
        return scale.checkpoint
    from experiments.training import train

    run = train(scale.pretrain, root, device=device, progress=False)
    return f"run:{run.name}"


def pinned(cfg: TrainConfig, root) -> TrainConfig:
    from experiments.training.initial import pin

    return pin(cfg, root)


def finetune_configs(scale: Scale, root, device: str) -> dict[str, TrainConfig]:
    """{"random": the random-init fine-tuning, "pretrained": the same from the pretrained weights}."""
    start = pretrained_start(scale, root, device)
    return {"random": scale.finetune, "pretrained": pinned(replace(scale.finetune, init_from=start), root)}


def pair_task(study: str, scale: str, cell: str, index: int, cfg: TrainConfig, device: str, labels: dict) -> dict:
    """One ``app.sweep`` task: seed pair ``index`` of ``cfg`` (init seed ``index``, children seeded
    (2i+1, 2i+1) and (2i+2, 2i+2), as every grid's pairs), labelled for the tables."""
    from app.sweep import task_children
    from experiments.grids import pair_seeds
    from lmc import paths

    init_seed, seeds_a, seeds_b = pair_seeds(index)
    task = {"grid": study, "scale": scale, "cell": cell, "labels": labels, "pair": index,
            "config": replace(cfg, init_seed=init_seed).to_dict(), "seeds_a": list(seeds_a),
            "seeds_b": list(seeds_b), "num_alphas": 11, "device": device}
    a, b = task_children(task)
    task.update(run_a=a.run_name(), run_b=b.run_name(),
                interpolation=paths.interpolation_name(a.run_name(), b.run_name(), 11))
    return task


def pair_tasks(study: str, scale: str, cells: dict[str, TrainConfig], seeds: int, device: str,
               axis: str) -> list[dict]:
    """Every cell's ``seeds`` pairs, labelled ``{axis: cell}``."""
    return [pair_task(study, scale, cell, index, cfg, device, {axis: cell})
            for cell, cfg in cells.items() for index in range(seeds)]


def child_a(cfg: TrainConfig, index: int) -> TrainConfig:
    """Child A of seed pair ``index`` alone (a single run with a pair's first noise: PLATON)."""
    from app.sweep import task_children

    return task_children(pair_task("", "", "", index, cfg, "cpu", {}))[0]


def execute(tasks: list[dict], args, out: Path) -> list[dict]:
    """Train and interpolate the pairs with ``lmc reproduce``'s executor and workers."""
    from app import sweep
    from lmc import paths

    slurm = {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_task": args.cpus_per_job,
             "timeout_min": args.timeout_min, "folder": str(out / paths.SUBMITIT_LOGS)}
    return sweep.execute(tasks, args.results, executor=args.executor, jobs=args.jobs,
                         events=out / paths.SWEEP_EVENTS, slurm=slurm)


def train_runs(cfgs: list[TrainConfig], args) -> list[Path]:
    """Single runs (PLATON): in this process, or ``--jobs`` local workers, each with its share of the cores."""
    from experiments.training import train

    if args.jobs <= 1 or len(cfgs) <= 1:
        return [train(cfg, args.results, device=args.device, progress=False) for cfg in cfgs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ProcessPoolExecutor(min(args.jobs, len(cfgs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_train_one, [(cfg.to_dict(), args.results, args.device, threads) for cfg in cfgs]))


def _train_one(job) -> Path:
    import torch

    from experiments.training import train

    cfg, root, device, threads = job
    torch.set_num_threads(threads)
    return train(TrainConfig.from_dict(cfg), root, device=device, progress=False)


def done_runs(root) -> set[str]:
    """The finished runs under the results root (before and after a study: what it trained)."""
    from lmc import paths

    return {p.parent.name for p in paths.runs_dir(root).glob(f"*/{paths.DONE}")}


def pretraining_runs(scale: Scale) -> list[str]:
    return [scale.pretrain.run_name()] if scale.pretrain is not None else []


def train_seconds(run_names, root) -> float:
    """Training time the runs logged (metrics.jsonl), summed: what a rerun from scratch would cost."""
    from lmc import paths
    from lmc.io import read_jsonl

    total = 0.0
    for name in set(run_names):
        metrics = paths.run_dir(name, root) / paths.METRICS
        if metrics.exists():
            total += sum(row.get("seconds", 0.0) for row in read_jsonl(metrics))
    return round(total, 1)


def summary_fields(name: str, title: str, scale: Scale, args) -> dict:
    import hashlib
    import sys

    module = Path(__file__).with_name(f"{name}.py")
    return {"command": "lmc " + " ".join(sys.argv[1:]), "grid": name, "artefacts": [name], "title": title,
            "scale": scale.name, "notes": scale.notes, "grid_file": str(module),
            "grid_sha256": hashlib.sha256(module.read_bytes()).hexdigest(), "overrides": [], "seeds": args.seeds,
            "intervals": args.seeds >= 2}
