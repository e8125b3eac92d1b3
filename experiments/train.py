"""Train one run: seeded init, seeded FFCV loader, checkpoints that resume bit for bit.

The run directory (``lmc.paths.run_dir(cfg.run_name())``) holds, written in this order:
``config.json`` (first, before any work), ``provenance.json``, ``loader_digest.json``,
``metrics.jsonl`` (one line per epoch), ``checkpoints/epoch_NNNN.pt`` (the latest epoch only,
written atomically), ``final.pt`` and ``DONE``. A finished run is skipped; an unfinished one
resumes from its last checkpoint and produces the same weights, bit for bit, as an
uninterrupted run (same device): the loader's epoch e is a pure function of the seeds and e,
and the checkpoint carries the model, the optimiser, the step and every RNG state.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from experiments.config import TrainConfig
from lmc import paths, seeds
from lmc.config import save_json
from lmc.errors import UserError
from lmc.io import append_jsonl, atomic_write_with, exclusive_lock, read_jsonl


class RunMismatchError(UserError):
    """The run directory holds a config.json that differs from the one asked for."""


# -- device and determinism --------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)


def set_deterministic() -> None:
    """Bitwise-reproducible kernels. cuBLAS needs a fixed workspace for deterministic GEMMs,
    and TF32 would change results between GPU generations, so it is off."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# -- model and optimiser ------------------------------------------------------------------

def build_model(cfg: TrainConfig, input_shape, num_classes: int) -> torch.nn.Module:
    """The initial model: a function of the init seed alone, built on the CPU so that it is
    the same whatever device trains it, without touching the global RNG of the caller."""
    from experiments.models import build_model as build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.init_seed_for_torch(cfg.init_seed))
        return build(cfg.model, tuple(input_shape), num_classes, depth=cfg.depth, width=cfg.width,
                     slope=cfg.slope, channels=cfg.channels, kernel=cfg.kernel, heads=cfg.heads,
                     head_dim=cfg.head_dim, embed_dim=cfg.embed_dim or None)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    # fused: one kernel for all parameters instead of ~10 ops per tensor; on a CPU core it makes
    # a small deep net's step about a quarter faster (benchmarks/bench_train.py). Elementwise, so as
    # deterministic as the default implementation, though not bitwise equal to it.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then constant (the paper's schedule)."""
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / warmup_steps)


# -- evaluation -----------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, manifest: dict,
             batch_size: int = 1000) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on clean uint8 images (decoded once)."""
    from pipelines import normalize

    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size], manifest)
        y = labels[start:start + batch_size]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    n = len(images)
    return {"loss": loss_sum / n, "accuracy": correct / n, "error": 1.0 - correct / n}


# -- checkpoints ----------------------------------------------------------------------------

def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, cfg: TrainConfig, model, optimizer, epoch: int, step: int) -> None:
    state = {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "step": step, "rng": _rng_state()}
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device=None) -> dict:
    return torch.load(path, map_location=device or "cpu", weights_only=False)


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / paths.CHECKPOINTS).glob("epoch_*.pt"))
    return found[-1] if found else None


def model_from_checkpoint(path: Path, device="cpu") -> tuple[torch.nn.Module, TrainConfig, dict]:
    """A checkpoint alone rebuilds its model: it carries its config."""
    from lmc.manifest import read_manifest

    ckpt = load_checkpoint(path, device)
    cfg = TrainConfig.from_dict(ckpt["config"])
    manifest = read_manifest(paths.beton_path(cfg.dataset, "train"))
    model = build_model(cfg, _chw(manifest), manifest["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(device), cfg, ckpt


def _chw(manifest: dict) -> tuple[int, int, int]:
    h, w, c = manifest["image_shape"]
    return (c, h, w)


# -- the run ----------------------------------------------------------------------------------

def prepare_run_dir(cfg: TrainConfig, root=None) -> Path:
    """Create the run directory and write config.json first; refuse a conflicting one."""
    run = paths.run_dir(cfg.run_name(), root)
    cfg_path = run / paths.CONFIG
    if cfg_path.exists():
        on_disk = json.loads(cfg_path.read_text())
        if TrainConfig.from_dict(on_disk) != cfg:
            raise RunMismatchError(f"{cfg_path} holds a different config; remove {run} or choose other settings")
    else:
        run.mkdir(parents=True, exist_ok=True)
        save_json(cfg.to_dict(), cfg_path)
    return run


def train(cfg: TrainConfig, root=None, *, progress: bool = True, stop_after_epochs: int | None = None,
          stop_at_step: int | None = None) -> Path:
    """Train ``cfg`` to completion (or resume it); return the run directory.

    ``stop_after_epochs`` ends this call after that many epochs (a clean interruption, for tests
    and time-sliced clusters). ``stop_at_step`` saves a spawn checkpoint at that step and returns:
    it is how a parent phase is trained for ``spawn_step`` steps.
    """
    paths.check_layout(root)  # never add runs to a results root of another layout version
    run = paths.run_dir(cfg.run_name(), root)
    if (run / paths.DONE).exists() and stop_at_step is None:
        return run
    # One worker at a time per run directory: the others wait, then find it DONE.
    with exclusive_lock(paths.lock_path(run)):
        if (run / paths.DONE).exists() and stop_at_step is None:
            return run
        return _train_locked(cfg, root, progress=progress, stop_after_epochs=stop_after_epochs,
                             stop_at_step=stop_at_step)


def _train_locked(cfg: TrainConfig, root, *, progress: bool, stop_after_epochs: int | None,
                  stop_at_step: int | None) -> Path:
    import beton_builders
    from lmc.manifest import manifest_hash
    from lmc.provenance import provenance
    from pipelines import load_split, loader_digest, make_loader

    device = resolve_device(cfg.device)
    betons = beton_builders.ensure(cfg.dataset, root)
    run = prepare_run_dir(cfg, root)
    set_deterministic()

    train_x, train_y = load_split(betons["train"], device=device)
    test_x, test_y = load_split(betons["test"], device=device)
    loader = make_loader(betons["train"], batch_size=cfg.batch_size, order_seed=cfg.order_seed,
                         aug_seed=cfg.aug_seed, augment=cfg.augment, device=device)
    manifest = loader.manifest
    model = build_model(cfg, _chw(manifest), manifest["num_classes"]).to(device)
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = len(loader)
    epoch, step = 0, 0

    # A parent phase (stop_at_step) runs in memory from the start: its run directory may hold
    # checkpoints of later epochs, written for other purposes, that must not be resumed from.
    resume = latest_checkpoint(run) if stop_at_step is None else None
    if resume is not None:
        # On the CPU: the RNG states must stay CPU ByteTensors (map_location=cuda would move them
        # and torch.set_rng_state refuses them); load_state_dict moves the rest to the model's device.
        ckpt = load_checkpoint(resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        epoch, step = ckpt["epoch"], ckpt["step"]
    elif cfg.spawn_step > 0 and stop_at_step is None:
        spawn = spawn_state(cfg, root, progress=progress)
        model.load_state_dict(spawn["model"])
        optimizer.load_state_dict(spawn["optimizer"])
        step = spawn["step"]
        epoch = step // steps_per_epoch

    if not (run / paths.PROVENANCE).exists():
        gpu = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
        save_json(provenance(device=str(device), data_manifest=manifest_hash(betons["train"]),
                             torch_threads=torch.get_num_threads(), **gpu), run / paths.PROVENANCE)
    if not (run / paths.DIGEST).exists():
        digest = loader_digest(betons["train"], order_seed=cfg.order_seed, aug_seed=cfg.aug_seed,
                               augment=cfg.augment, epochs=min(2, cfg.epochs), batch_size=cfg.batch_size)
        save_json({"epochs": digest}, run / paths.DIGEST)

    epochs_this_call = 0
    model.train()
    # One bar per run, one tick per epoch: readable both in a terminal and in a CI log.
    bar = tqdm(total=cfg.epochs, initial=epoch, desc=run.name, unit="epoch", disable=not progress,
               dynamic_ncols=True)
    while epoch < cfg.epochs:
        t0 = time.perf_counter()
        skip = step - epoch * steps_per_epoch  # > 0 only in the first epoch after a mid-epoch spawn
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for i, (x, y, _) in enumerate(loader.iter_epoch(epoch)):
            if i < skip:
                continue
            if stop_at_step is not None and step >= stop_at_step:
                bar.close()
                save_spawn(run, cfg, model, optimizer, epoch, step)
                return run
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step, steps_per_epoch)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        epoch += 1
        if stop_at_step is not None:
            if step >= stop_at_step:
                bar.close()
                save_spawn(run, cfg, model, optimizer, epoch, step)
                return run
            if epoch == cfg.epochs:
                raise UserError(f"spawn_step={stop_at_step} is beyond the run's {step} steps "
                                 f"({cfg.epochs} epochs of {steps_per_epoch}); choose a smaller spawn_step")
            continue
        # A diverged run (NaN loss) is a result too, the paper's "unstable" cells: it is logged as is.
        row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "train_loss_running": loss_sum.item() / max(seen, 1),
               "train_acc_running": correct.item() / max(seen, 1)}
        test = evaluate(model, test_x, test_y, manifest)
        row.update(test_loss=test["loss"], test_acc=test["accuracy"])
        if epoch == cfg.epochs or (cfg.eval_train_every and epoch % cfg.eval_train_every == 0):
            tr = evaluate(model, train_x, train_y, manifest)
            row.update(train_loss=tr["loss"], train_acc=tr["accuracy"])
        row["seconds"] = time.perf_counter() - t0
        _truncate_metrics(run, epoch - 1)
        append_jsonl(run / paths.METRICS, row)
        previous = latest_checkpoint(run)
        save_checkpoint(paths.checkpoint_path(run, epoch), cfg, model, optimizer, epoch, step)
        # Keep only the newest epoch checkpoint: resuming needs no more, and deep nets are large.
        if previous is not None and previous != paths.checkpoint_path(run, epoch):
            previous.unlink()
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss_running']:.3f}", test_acc=f"{row['test_acc']:.3f}")
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs and epoch < cfg.epochs:
            bar.close()
            return run

    bar.close()
    final = {"config": cfg.to_dict(), "model": model.state_dict(), "epoch": epoch, "step": step}
    atomic_write_with(run / paths.FINAL, lambda tmp: torch.save(final, tmp))
    (run / paths.DONE).write_text(f"finished epoch {epoch} step {step}\n")
    return run


def _truncate_metrics(run: Path, keep_epochs: int) -> None:
    """After a resume, drop metric lines of epochs that were logged but not checkpointed."""
    rows = read_jsonl(run / paths.METRICS)
    if len(rows) > keep_epochs:
        from lmc.io import atomic_write_text

        atomic_write_text(run / paths.METRICS, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                         for r in rows[:keep_epochs]))


def save_spawn(run: Path, cfg: TrainConfig, model, optimizer, epoch: int, step: int) -> None:
    save_checkpoint(paths.spawn_checkpoint_path(run, step), cfg, model, optimizer, epoch, step)


def spawn_state(cfg: TrainConfig, root=None, *, progress: bool = True) -> dict:
    """The parent's state after ``cfg.spawn_step`` steps under the parent seeds (trained once,
    shared by every child that names the same parent)."""
    parent = cfg.parent()
    parent_run = paths.run_dir(parent.run_name(), root)
    path = paths.spawn_checkpoint_path(parent_run, cfg.spawn_step)
    if not path.exists():
        train(parent, root, progress=progress, stop_at_step=cfg.spawn_step)
    return load_checkpoint(path)


def read_metrics(run: Path) -> list[dict]:
    return read_jsonl(Path(run) / paths.METRICS)
