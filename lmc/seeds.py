"""The one place that owns seeds.

The study keeps three user-facing seeds apart, one per source of randomness:

* ``init_seed``  -> the initial weights (the paper's "trainer seed");
* ``order_seed`` -> the order of samples in every epoch;
* ``aug_seed``   -> the random augmentations.

A user seed is never used directly. It is folded with the name of its purpose through numpy's
``SeedSequence`` (a hash designed for this), so that

* the streams are independent even when a user picks the same number for all three, and
* nearby user seeds give unrelated streams. This matters for FFCV, whose random order uses
  ``default_rng(seed + epoch)``: passing the user seed straight through would make
  order(seed=1, epoch=e+1) equal order(seed=2, epoch=e).
"""
from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

Purpose = Literal["init", "order", "aug", "align", "bootstrap"]
# "align": the order in which weight matching visits the permutations (experiments.align);
# "bootstrap": the resampling of seed pairs behind a confidence interval (analysis.intervals).
PURPOSES: tuple[str, ...] = ("init", "order", "aug", "align", "bootstrap")


def check_seed(value, name: str = "seed") -> int:
    """A seed is a non-negative integer; anything else is refused with a clear message."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _purpose_key(purpose: str) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; expected one of {PURPOSES}")
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")


def derive(seed: int, purpose: Purpose, *extra: int, bits: int = 63) -> int:
    """A well-mixed integer seed in [0, 2**bits) for ``purpose``, from a user seed.

    ``extra`` folds in more context (an epoch, an op's salt) without collisions between them.
    """
    seed = check_seed(seed, f"{purpose} seed")
    words = [seed & 0xFFFFFFFF, seed >> 32, _purpose_key(purpose), *(int(e) for e in extra)]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    value = (int(state[0]) << 32) | int(state[1])
    return value & ((1 << bits) - 1)


def init_seed_for_torch(init_seed: int) -> int:
    """The seed given to ``torch.manual_seed`` (inside ``torch.random.fork_rng``) to build a model."""
    return derive(init_seed, "init")


def ffcv_order_seed(order_seed: int) -> int:
    """The seed handed to FFCV's ``Loader(seed=...)``.

    FFCV adds the epoch to it and feeds ``numpy.random.default_rng``; 31 bits keep it a valid
    int32 everywhere FFCV might store it, and the hash keeps ``s + e`` overlaps away from
    nearby user seeds.
    """
    return derive(order_seed, "order", bits=31)


def aug_key(aug_seed: int) -> int:
    """The 63-bit key from which every per-sample augmentation draw is hashed."""
    return derive(aug_seed, "aug")


def parse_seed_pair(text: str) -> tuple[int, int]:
    """``"ORDER,AUG"`` -> (order seed, augmentation seed); anything else is a one-line error."""
    from lmc.errors import UsageError

    parts = str(text).split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"expected ORDER_SEED,AUG_SEED, written ORDER,AUG as two non-negative integers such as "
                         f"1,1; got {text!r}")
    return int(parts[0]), int(parts[1])
