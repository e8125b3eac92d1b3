"""One-shot pruning of a finished run: its magnitude mask as a run-like folder, and its accuracy
under a mask.

``save_magnitude_mask(run, ratio)`` keeps the round(r·N) largest |θ| of the run's final weights
(``magnitude.py``) and writes them as ``lmc.paths.mask_dir(mask_name(run, "magnitude", r))``:
``config.json`` (the run's config: the architecture the mask fits) first, then ``mask.pt``
(checksummed, the format of a PLATON run's final mask) and ``provenance.json``. A config then
names it ``mask_from="mask:<name>"``: the lottery-ticket baseline against PLATON's mask.
``masked_accuracy(run, mask)`` evaluates the run's final weights with the mask applied, without
retraining (one-shot pruning's accuracy).
"""
from __future__ import annotations

from pathlib import Path

import torch

from lmc import paths
from lmc.config import save_json
from lmc.io import exclusive_lock

from .magnitude import magnitude_mask
from .masks import Mask, check_ratio


def _final_model(run: Path, root, device):
    from experiments.interpolate import load_final
    from experiments.training import build_model, task_for

    cfg, state = load_final(run)
    task = task_for(cfg, root, device)
    model = build_model(cfg, **task.model_args)
    model.load_state_dict(state)
    return cfg, model.to(device), task


def save_magnitude_mask(run: str | Path, ratio: float, root=None) -> str:
    """The magnitude mask of ``run``'s final weights at remaining ratio ``ratio``, written once;
    returns its ``mask_from`` spec (``mask:<name>``)."""
    from experiments.training import checkpoints
    from lmc.provenance import provenance

    ratio = check_ratio(ratio)
    run = Path(run)
    name = paths.mask_name(run.name, "magnitude", ratio)
    out = paths.mask_dir(name, root)
    with exclusive_lock(paths.lock_path(out)):
        if not (out / paths.MASK).exists():
            cfg, model, _ = _final_model(run, root, torch.device("cpu"))
            mask = magnitude_mask(model, ratio)
            out.mkdir(parents=True, exist_ok=True)
            save_json(cfg.to_dict(), out / paths.CONFIG)
            checkpoints.save(out / paths.MASK, mask.state_dict())
            save_json(provenance(kind="magnitude_mask", source_run=run.name, remaining_ratio=ratio,
                                 kept=mask.num_kept, total=mask.num_total), out / paths.PROVENANCE)
    return f"mask:{name}"


def load_mask(path: str | Path) -> Mask:
    """A mask file (checksummed or plain), a run's final mask or a mask folder's."""
    from experiments.training import checkpoints

    path = Path(path)
    if path.is_dir():
        path = path / paths.MASK
    state = checkpoints.load(path) if path.with_name(path.name + ".sha256").exists() else \
        torch.load(path, map_location="cpu", weights_only=True)
    return Mask.from_state_dict(state)


@torch.no_grad()
def masked_accuracy(run: str | Path, mask: Mask, root=None, *, split: str = "test", device="auto") -> dict:
    """Loss and accuracy of ``run``'s final weights with ``mask`` applied (no retraining)."""
    from experiments.training import resolve_device, set_deterministic

    dev = resolve_device(device)
    set_deterministic()
    _, model, task = _final_model(Path(run), root, dev)
    mask.to(dev).apply_to_weights(model)
    return task.evaluate(model, split)
