"""Training: one run from its config to a run directory, and parents trained to spawn steps.

    train(cfg, root, device="auto")            -> the run directory (finished, or resumed to the end)
    train_replicas([cfg, ...], root)           -> their run directories, compatible runs trained as one
                                                  stacked network (``replicas.py``, ``stacked.py``)
    train_parent(parent_cfg, [k1, k2, ...])    -> the parent's spawn checkpoints, trained once

What varies lives beside the loop (``loop.py``, one exit): ``tasks.py`` (batches, loss,
evaluation), ``schedules.py`` (the learning rate of every step), ``hooks.py`` (clipping,
masks, logging, checkpoints, stops), ``checkpoints.py``, ``rundir.py``, ``builders.py``
(model and optimiser), ``device.py``.
"""
from experiments.training.builders import build_model, build_optimizer
from experiments.training.device import resolve_device, set_deterministic
from experiments.training.replicas import train_replicas
from experiments.training.run import train
from experiments.training.spawn import spawn_state, train_parent
from experiments.training.tasks import task_for

__all__ = ["build_model", "build_optimizer", "resolve_device", "set_deterministic", "spawn_state", "task_for",
           "train", "train_parent", "train_replicas"]
