"""The loader's contract, proved on real data (issue 3's seven proofs and the loader's API)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lmc import seeds
from lmc.config import ConfigError
from pipelines import AugmentConfig, load_split, make_loader, normalize, twin
from pipelines_fixtures import by_index, cifar_train, collect, mnist_train

AUG = AugmentConfig(translate=2, flip_prob=0.5)
EPOCHS = 3


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    return mnist_train(tmp_path_factory)


@pytest.fixture(scope="session")
def runs(mnist):
    """Loaders that differ in one thing each, and their first epochs, collected once."""
    specs = {
        "a": dict(order_seed=1, aug_seed=2),
        "a_again": dict(order_seed=1, aug_seed=2),
        "order_changed": dict(order_seed=2, aug_seed=2),
        "aug_changed": dict(order_seed=1, aug_seed=7),
        # Odd batch size, one thread, and its first epoch is 2: proofs 5 and 6.
        "resumed": dict(order_seed=1, aug_seed=2, batch_size=77, workers=1, start_epoch=2),
    }
    out = {}
    for name, spec in specs.items():
        spec = {"batch_size": 128, "augment": AUG, "normalize": False, **spec}
        loader = make_loader(mnist, **spec)
        epochs = {}
        if name == "resumed":
            first = [tuple(t.numpy() for t in batch) for batch in loader]  # __iter__ starts at epoch 2
            epochs[2] = tuple(np.concatenate(a) for a in zip(*first))
        for e in range(EPOCHS):
            if e not in epochs:
                epochs[e] = collect(loader, e)[:3]
        out[name] = (loader, epochs)
    return out


def test_1_same_seeds_give_identical_batches(runs):
    loader, a = runs["a"]
    _, b = runs["a_again"]
    for e in range(EPOCHS):
        for x, y in zip(a[e], b[e]):
            np.testing.assert_array_equal(x, y)
    again = collect(loader, 1)  # and the same instance, a second time
    for x, y in zip(a[1], again):
        np.testing.assert_array_equal(x, y)


def test_2_order_seed_changes_order_only(runs):
    _, a = runs["a"]
    _, o = runs["order_changed"]
    for e in range(EPOCHS):
        assert not np.array_equal(a[e][2], o[e][2])
        np.testing.assert_array_equal(by_index(a[e][0], a[e][2]), by_index(o[e][0], o[e][2]))
        np.testing.assert_array_equal(by_index(a[e][1], a[e][2]), by_index(o[e][1], o[e][2]))


def _fraction_changed(x, y):
    return np.mean([not np.array_equal(u, v) for u, v in zip(x, y)])


def test_3_aug_seed_changes_augmentation_only(runs):
    _, a = runs["a"]
    _, g = runs["aug_changed"]
    for e in range(EPOCHS):
        np.testing.assert_array_equal(a[e][2], g[e][2])
        np.testing.assert_array_equal(a[e][1], g[e][1])
        # Same (ty, tx, flip) by chance: 1/50 here; blank-ish digits may also coincide.
        assert _fraction_changed(a[e][0], g[e][0]) > 0.9


def test_4_epochs_differ_in_augmentation(runs):
    _, a = runs["a"]
    x0, x1 = by_index(a[0][0], a[0][2]), by_index(a[1][0], a[1][2])
    assert _fraction_changed(x0, x1) > 0.9


def test_5_batch_size_and_workers_do_not_change_the_stream(runs):
    _, a = runs["a"]
    _, r = runs["resumed"]
    for e in range(EPOCHS):
        for x, y in zip(a[e], r[e]):
            np.testing.assert_array_equal(x, y)


def test_6_starting_at_an_epoch_equals_reaching_it(runs):
    loader, r = runs["resumed"]
    _, a = runs["a"]
    assert loader.next_epoch == 3
    for x, y in zip(a[2], r[2]):
        np.testing.assert_array_equal(x, y)


def test_7_nearby_order_seeds_share_no_permutation(runs, mnist):
    third = make_loader(mnist, batch_size=100, order_seed=3)
    orders = {(3, e): third.order(e).tobytes() for e in range(6)}
    orders.update({(s, e): runs[name][0].order(e).tobytes()
                   for s, name in ((1, "a"), (2, "order_changed")) for e in range(6)})
    assert len(set(orders.values())) == len(orders)
    # The hazard being avoided: FFCV's own seeds overlap as order(s, e+1) == order(s+1, e).
    rng = lambda s: np.random.default_rng(s).permutation(10)  # noqa: E731
    assert np.array_equal(rng(1 + 1), rng(2 + 0))
    assert seeds.ffcv_order_seed(1) + 1 != seeds.ffcv_order_seed(2)


def test_batches_match_the_numpy_twin_and_carry_true_labels(mnist, runs):
    from beton_builders import embedded

    images, labels = load_split(mnist)
    assert images.dtype == torch.uint8 and images.shape == (4000, 1, 28, 28) and labels.dtype == torch.int64
    source_x, source_y = embedded.load_arrays()["train"]
    np.testing.assert_array_equal(images.numpy()[:, 0], source_x)  # the decoder's twin: the source
    np.testing.assert_array_equal(labels.numpy(), source_y)
    _, a = runs["a"]
    x, y, idx = a[1]
    np.testing.assert_array_equal(y, labels.numpy()[idx])
    hwc = images.numpy()[idx].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(x, twin.augment(hwc, idx, seeds.aug_key(2), 1, AUG))


def test_colour_pipeline_matches_twin(tmp_path_factory):
    beton = cifar_train(tmp_path_factory, n=600)
    images, _ = load_split(beton)
    loader = make_loader(beton, batch_size=100, order_seed=4, aug_seed=5, augment="vit", normalize=False)
    x, _, idx, _ = collect(loader, 2)
    expected = twin.augment(images.numpy()[idx].transpose(0, 2, 3, 1), idx, seeds.aug_key(5), 2,
                            loader.augment)
    diff = np.abs(x.astype(int) - expected)
    assert diff.max() <= twin.JITTER_TOLERANCE["max_abs"]
    assert (diff > 0).mean() <= twin.JITTER_TOLERANCE["max_fraction"]


def test_normalised_batches_equal_normalize(mnist, runs):
    loader = make_loader(mnist, batch_size=128, order_seed=1, aug_seed=2, augment=AUG)
    x, y, idx = next(loader.iter_epoch(0))
    _, a = runs["a"]
    assert x.dtype == torch.float32 and x.is_contiguous() and x.shape == (128, 1, 28, 28)
    raw = torch.from_numpy(a[0][0][:128])
    assert torch.equal(x, normalize(raw, loader.manifest))
    m = loader.manifest
    np.testing.assert_allclose(x.numpy(), twin.normalize(raw.numpy(), m["mean"], m["std"]), rtol=2e-7, atol=1e-6)


def test_epochs_left_early_or_interleaved_stay_correct(runs):
    loader, a = runs["a"]
    first = loader.iter_epoch(0)
    next(first)
    second = loader.iter_epoch(1)
    x1, _, i1 = next(second)
    x0, _, i0 = next(first)  # epoch 0 resumes while epoch 1 is alive
    first.close()
    np.testing.assert_array_equal(x0.numpy(), a[0][0][128:256])
    np.testing.assert_array_equal(x1.numpy(), a[1][0][:128])
    np.testing.assert_array_equal(collect(loader, 1)[0], a[1][0])


def test_threads_and_global_rngs_are_left_alone(mnist):
    import numba

    old, old_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    try:
        loader = make_loader(mnist, batch_size=500, order_seed=3, aug_seed=3, augment="translate2", workers=2)
        for _ in loader:
            pass
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        assert random.getstate() == states[0]
        assert np.array_equal(np.random.get_state()[1], states[1])
        assert torch.equal(torch.get_rng_state(), states[2])
    finally:
        torch.set_num_threads(old)
        numba.set_num_threads(old_numba)


def test_length_drop_last_and_sequential_order(mnist):
    loader = make_loader(mnist, batch_size=300, order_seed=None, drop_last=True, normalize=False)
    x, y, idx, sizes = collect(loader, 5)
    assert len(loader) == 13 and sizes == [300] * 13
    np.testing.assert_array_equal(idx, np.arange(3900))
    assert len(make_loader(mnist, batch_size=300, order_seed=None)) == 14


@pytest.mark.parametrize("kwargs, message", [
    (dict(order_seed=-1), "order_seed"), (dict(order_seed=1.5), "order_seed"),
    (dict(order_seed="3"), "order_seed"), (dict(aug_seed=True), "aug_seed"), (dict(batch_size=0), "batch_size"),
    (dict(workers=0), "workers"), (dict(workers=10**4), "NUMBA_NUM_THREADS"), (dict(device="tpu"), "device"),
    (dict(start_epoch=-2), "start_epoch"),
    (dict(augment="rotate"), "known: none"), (dict(augment=AugmentConfig(crop_size=29)), "crop_size=29"),
    (dict(augment=AugmentConfig(translate=28)), "out of view"), (dict(normalize=1), "normalize"),
])
def test_bad_arguments_are_refused_at_construction(mnist, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_loader(mnist, **{"batch_size": 10, "order_seed": 0, **kwargs})


def test_bad_epoch_is_refused(runs):
    with pytest.raises(ConfigError, match="epoch"):
        runs["a"][0].iter_epoch(-1)


def test_decoded_splits_are_cached_per_file_version(mnist, tmp_path, monkeypatch):
    import os
    import shutil

    import pipelines.loader as loader_mod
    from lmc import paths

    beton = tmp_path / "train.beton"
    shutil.copy(mnist, beton)
    shutil.copy(paths.manifest_path(mnist), paths.manifest_path(beton))
    images, labels = load_split(mnist)
    first = load_split(beton)
    assert torch.equal(first[0], images) and torch.equal(first[1], labels)

    def no_loader(*args, **kwargs):
        raise AssertionError("decoded again although the file did not change")

    monkeypatch.setattr(loader_mod, "make_loader", no_loader)
    again = load_split(beton)
    assert again[0] is first[0]  # served from the cache: no FFCV Loader built
    os.utime(beton, ns=(1, 1))  # a rebuilt file (another mtime) is decoded afresh
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(beton)
    monkeypatch.undo()
    monkeypatch.setattr(loader_mod, "SPLIT_CACHE_BYTES", 0)  # LMC_SPLIT_CACHE_MB=0: no cache
    monkeypatch.setattr(loader_mod, "_SPLITS", type(loader_mod._SPLITS)())
    a, b = load_split(beton), load_split(beton)
    assert a[0] is not b[0] and torch.equal(a[0], b[0]) and not loader_mod._SPLITS


def test_default_workers_follow_numbas_thread_count():
    """A sweep worker lowers numba's thread count to its share; the loader then uses that many."""
    import os

    import numba

    from pipelines.loader import default_workers

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert default_workers() == 1
    finally:
        numba.set_num_threads(before)
    assert default_workers() == min(before, len(os.sched_getaffinity(0)))
