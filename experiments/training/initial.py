"""Starting points other than the init seed: weights to fine-tune from, masks to train under.

``init_from`` and ``mask_from`` name a run (``run:<run-name>`` under the results root, or a run
directory), a ``.pt`` file, a mask folder (``mask:<name>`` under ``<results>/masks``;
``mask_from`` only) or (``init_from`` only) a local Hugging Face folder (a ViT or a GPT-2). The
command line pins each to the sha256 of its *content* (``pin``), which is part of the run's
config and so of its name: a run trained from other weights is another run, and a
checkpoint that changed after the config named it is refused rather than silently used.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from experiments.config import TrainConfig
from experiments.training import checkpoints
from lmc import paths
from lmc.config import replace
from lmc.errors import UserError
from lmc.io import sha256_file

RUN_PREFIX = "run:"
MASK_PREFIX = "mask:"  # a mask folder under <results>/masks (lmc.paths.mask_dir), e.g. a magnitude mask


class InitSourceError(UserError):
    """An init_from or mask_from that is missing, changed since it was pinned, or unreadable."""


def resolve(spec: str, root=None) -> Path:
    if spec.startswith(RUN_PREFIX):
        return paths.run_dir(spec[len(RUN_PREFIX):], root)
    if spec.startswith(MASK_PREFIX):
        return paths.mask_dir(spec[len(MASK_PREFIX):], root)
    return Path(spec).expanduser()


def _is_hf_folder(path: Path) -> bool:
    """A Hugging Face checkpoint folder: its config.json names a model_type (a run's never does;
    both folders hold a config.json)."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def _source_file(spec: str, root, what: str) -> Path:
    """The file behind a spec: a run's final.pt (or its mask), a .pt file; a folder stays a folder."""
    path = resolve(spec, root)
    if path.is_dir() and (path / paths.CONFIG).exists() and not _is_hf_folder(path):  # a run directory
        path = path / (paths.MASK if what == "mask_from" else paths.FINAL)
    if not path.exists():
        raise InitSourceError(f"{what}={spec!r}: {path} does not exist; train that run first or give the path of "
                              f"a checkpoint on this machine (nothing is downloaded)")
    return path


def content_sha256(spec: str, root=None, what: str = "init_from") -> str:
    """The sha256 of what the run takes from ``spec``: a checkpoint file's weights (``init_from``)
    or keep-masks (``mask_from``), tensor by tensor, so that the same weights give the same hash
    (and the run the same name) whichever process or machine saved them; a Hugging Face folder's
    files as they are."""
    from experiments.models.hf_vit import checkpoint_sha256

    path = _source_file(spec, root, what)
    if path.is_dir():
        return checkpoint_sha256(path)
    state = _load_any(path) if what == "mask_from" else _load_state(path)
    state = state.get("keep") if what == "mask_from" and isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InitSourceError(f"{what}={spec!r}: {path} holds no {'keep-masks' if what == 'mask_from' else 'state_dict'}; "
                              f"give a run, a mask folder or a checkpoint written by this toolkit or torch.save")
    return tensors_sha256(state)


def tensors_sha256(state: dict) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state's tensors, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        if not isinstance(state[name], torch.Tensor):
            digest.update(f"{name}\0{state[name]!r}\0".encode())
            continue
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def pin(cfg: TrainConfig, root=None) -> TrainConfig:
    """Fill in the content hashes of ``init_from`` and ``mask_from`` where they are not yet set."""
    changes = {}
    for what in ("init_from", "mask_from"):
        spec = getattr(cfg, what)
        if spec and not getattr(cfg, f"{what}_sha256"):
            changes[f"{what}_sha256"] = content_sha256(spec, root, what)
    return replace(cfg, **changes) if changes else cfg


def _check_pinned(cfg: TrainConfig, what: str, root) -> Path:
    spec, pinned = getattr(cfg, what), getattr(cfg, f"{what}_sha256")
    path = _source_file(spec, root, what)
    # A pin of the whole file's bytes (before 2026-12) is honoured for the runs that carry one.
    if pinned and content_sha256(spec, root, what) != pinned and (path.is_dir() or sha256_file(path) != pinned):
        raise InitSourceError(f"{what}={spec!r} changed since this run's config named it (sha256 {pinned[:12]}…); "
                              f"restore it, or start a new run (the command line pins the new content)")
    return path


def _load_any(path: Path):
    """One of our checkpoints (checked against its checksum), or a plain torch file."""
    try:
        return checkpoints.load(path)
    except checkpoints.DamagedCheckpoint as exc:
        if exc.reason != "unchecked":  # ours, and damaged
            raise
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InitSourceError(f"{path}: not a torch checkpoint ({type(exc).__name__})") from None


def _load_state(path: Path) -> dict:
    """A state_dict from a checkpoint of ours (its ``model``) or a plain torch state_dict."""
    state = _load_any(path)
    return state.get("model", state) if isinstance(state, dict) else state


def load_initial(model: torch.nn.Module, cfg: TrainConfig, root=None) -> dict:
    """Overwrite the seeded initial weights with ``cfg.init_from``'s; return what was done (for
    provenance). A classification head that does not fit keeps the init seed's draw."""
    from experiments.models.hf_vit import load_hf_vit, load_state_into

    path = _check_pinned(cfg, "init_from", root)
    if path.is_dir():  # a Hugging Face folder
        hf_type = json.loads((path / "config.json").read_text()).get("model_type") if (path / "config.json").exists() else None
        if hf_type == "gpt2":
            from experiments.models.gpt import load_hf_gpt2

            model.load_state_dict(load_hf_gpt2(path, model.config))
            report = {"source": str(path), "reinitialised": []}
        elif hf_type == "vit":
            r = load_hf_vit(path, model)
            report = {"source": r.source, "reinitialised": list(r.reinitialised), "notes": list(r.notes)}
        else:
            raise InitSourceError(f"init_from={cfg.init_from!r}: {path} is a folder but not a Hugging Face ViT or "
                                  f"GPT-2 checkpoint (config.json model_type {hf_type!r}) nor a run directory")
    else:
        r = load_state_into(model, _load_state(path), str(path))
        report = {"source": r.source, "reinitialised": list(r.reinitialised)}
    return {**report, "sha256": cfg.init_from_sha256}


def load_mask(cfg: TrainConfig, root=None):
    """The fixed mask of ``prune=mask``: ``mask_from``'s final mask."""
    from experiments.pruning.masks import Mask

    return Mask.from_state_dict(_load_any(_check_pinned(cfg, "mask_from", root)))
