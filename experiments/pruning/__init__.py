"""Pruning for seed 001's study: PLATON during training, one-shot magnitude pruning, and the masks.

One topic per file:

    targets.py    which matrices may be pruned (a transformer's attention Q/K/V/output and MLP)
    masks.py      Mask (name -> bool tensor) and the global, exactly sized, tie-broken selection;
                  MaskHook keeps a fixed mask during retraining (the lottery-ticket runs)
    platon.py     PLATON (Zhang et al., ICML 2022): scores, cubic schedule, the training hook
    magnitude.py  one-shot global magnitude pruning (the baseline mask)

The hooks (``Platon``, ``MaskHook``) follow the trainer's hook protocol: they are called with a
state carrying ``model``, ``optimizer`` and ``step`` (optimiser steps taken, counting the one
just made when ``after_step`` runs) at ``after_backward`` (gradients present, before
``optimizer.step()``) and ``after_step``; ``state_dict()``/``load_state_dict()`` carry them through
a checkpoint so a resumed run continues bit for bit.
"""
from .magnitude import magnitude_mask
from .masks import Mask, MaskHook, PruningError, check_ratio, keep_count, select_global
from .platon import Platon, PlatonConfig, remaining_ratio
from .targets import prunable_parameters

__all__ = ["Mask", "MaskHook", "Platon", "PlatonConfig", "PruningError", "check_ratio", "keep_count",
           "magnitude_mask", "prunable_parameters", "remaining_ratio", "select_global"]
