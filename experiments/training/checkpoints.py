"""Checkpoints you can trust: written atomically, checksummed, kept two deep.

A checkpoint is a ``torch.save`` file followed by a sha256 trailer (``lmc.io.write_checked``:
one file, one atomic rename; ``torch.load`` still reads it as is). A file whose trailer is
missing or disagrees with its bytes (truncated, a flipped bit) is *damaged*: loading it raises
:class:`DamagedCheckpoint` in one line, and a resuming run falls back to the previous epoch's
checkpoint, which is why the two newest are kept. Every checkpoint carries its config, its step
and epoch, the device it was written on and every RNG state, so a run resumed from it
continues bit for bit.
"""
from __future__ import annotations

import copy
import io
import random
from pathlib import Path

import numpy as np
import torch

from lmc import paths
from lmc.io import DamagedFileError, read_checked, write_checked

FORMAT = 2
KEEP = 2  # epoch checkpoints kept: the newest, and one to fall back to if the newest is damaged


# A checkpoint that fails its check: lmc.io's one-line error, whose ``reason`` says how.
DamagedCheckpoint = DamagedFileError


def save(path: Path, state: dict) -> None:
    """Write ``state`` atomically with its checksum trailer."""
    write_checked(path, lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict, tmp: Path) -> None:
    # Through a file object: given a path, torch names the archive inside the zip after the file,
    # here a random temporary name, so equal states would give different bytes.
    with open(tmp, "wb") as f:
        torch.save(state, f)


def load(path: Path) -> dict:
    """Read a checkpoint after checking its bytes against its checksum; tensors land on the CPU
    (RNG states must stay CPU ByteTensors; load_state_dict moves the rest to the model's device)."""
    path = Path(path)
    if not path.exists():
        raise DamagedCheckpoint(f"{path}: missing", "truncated")
    data = read_checked(path)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # a file that matches its checksum but was never a checkpoint
        raise DamagedCheckpoint(f"{path}: torch cannot read it ({type(exc).__name__})", "syntax") from None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# -- RNG states -------------------------------------------------------------------------------

def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- a run's checkpoints ------------------------------------------------------------------------

def standalone(state_dict: dict) -> dict:
    """``state_dict`` with every tensor that is a view into a larger storage copied out.

    ``torch.save`` writes a view's whole storage: a replica's weights, which are slices of its
    batch's stacked tensors, would otherwise carry every replica's. A single run's tensors own
    their storage and are returned as they are, so its files do not change.
    """
    views = [k for k, t in state_dict.items() if isinstance(t, torch.Tensor)
             and (t.storage_offset() or t.untyped_storage().nbytes() != t.numel() * t.element_size())]
    if not views:
        return state_dict
    out = copy.copy(state_dict)  # keeps a module state_dict's _metadata
    for k in views:
        out[k] = state_dict[k].clone()
    return out


def training_state(config: dict, model, optimizer, epoch: int, step: int, device: torch.device,
                   hooks: dict | None = None) -> dict:
    from lmc import numerics

    return {"format": FORMAT, "config": config, "model": standalone(model.state_dict()),
            "optimizer": optimizer.state_dict(), "hooks": hooks or {}, "epoch": epoch, "step": step,
            "device": device.type, "rng": rng_state(), "numerics": numerics.profile()}


def restore(state, ckpt: dict, hooks: list, steps_per_epoch: int) -> None:
    """Put a saved training state (an epoch's or a spawn step's) back into ``state`` and ``hooks``."""
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    state.step = ckpt["step"]
    state.epoch = state.step // steps_per_epoch  # epochs completed; a spawn step may fall mid-epoch
    for hook in hooks:
        if hook.name in ckpt.get("hooks", {}):
            hook.load_state_dict(ckpt["hooks"][hook.name])


def epoch_checkpoints(run: Path) -> list[Path]:
    """The run's epoch checkpoints, oldest first."""
    return sorted((Path(run) / paths.CHECKPOINTS).glob("epoch_*.pt"))


def save_epoch(run: Path, state: dict) -> Path:
    """Save the checkpoint of ``state['epoch']`` and drop all but the ``KEEP`` newest."""
    path = paths.checkpoint_path(run, state["epoch"])
    save(path, state)
    for old in epoch_checkpoints(run)[:-KEEP]:
        remove(old)
    return path


def latest_good(run: Path, warn=print) -> dict | None:
    """The newest epoch checkpoint that passes its checksum; each damaged newer one is reported
    in one line (``warn``) and skipped. None when there is none to resume from."""
    for path in reversed(epoch_checkpoints(run)):
        try:
            return load(path)
        except DamagedCheckpoint as exc:
            warn(f"skipping a damaged checkpoint: {exc}; resuming from the one before")
    return None
