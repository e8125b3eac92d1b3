"""The augmentation config, the compiled kernel and its pure-numpy twin (no .beton needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lmc.config import ConfigError
from pipelines import AUGMENTATIONS, AugmentConfig, get_augmentation
from pipelines import kernel, twin

INTEGER_CONFIGS = [
    AugmentConfig(),
    AugmentConfig(translate=3, fill=7),
    AugmentConfig(flip_prob=0.5),
    AUGMENTATIONS["translate2"],
    AUGMENTATIONS["translate_flip"],
    AugmentConfig(crop_size=16),
    AugmentConfig(crop_size=19, flip_prob=0.5, translate=2, fill=255),
]
JITTER_CONFIGS = [
    AUGMENTATIONS["vit"],
    AugmentConfig(brightness=0.4, contrast=0.4),
    AugmentConfig(saturation=0.8, hue=0.5, translate=1),
]
SHAPES = [(28, 28, 1), (32, 32, 3), (20, 24, 3)]


def _images(shape, n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10**9, n)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cfg", INTEGER_CONFIGS, ids=repr)
def test_integer_ops_match_twin_bitwise(cfg, shape):
    x, idx = _images(shape)
    compiled = kernel.apply(x, idx, key=12345, epoch=3, cfg=cfg)
    assert compiled.dtype == np.uint8 and compiled.shape == (len(x), shape[2], shape[0], shape[1])
    np.testing.assert_array_equal(compiled, twin.augment(x, idx, 12345, 3, cfg))


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)], ids=str)
@pytest.mark.parametrize("cfg", JITTER_CONFIGS, ids=repr)
def test_color_jitter_matches_twin_within_tolerance(cfg, shape):
    x, idx = _images(shape, seed=1)
    diff = np.abs(kernel.apply(x, idx, 7, 0, cfg).astype(int) - twin.augment(x, idx, 7, 0, cfg))
    assert diff.max() <= twin.JITTER_TOLERANCE["max_abs"]
    assert (diff > 0).mean() <= twin.JITTER_TOLERANCE["max_fraction"]


def test_hash_known_answer_and_draws_match_twin():
    # splitmix64 started at 0 gives 0xE220A8397B1DCDAF first (Vigna's reference).
    assert twin.mix64(0) == 0xE220A8397B1DCDAF
    assert int(kernel._mix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    cfg = AugmentConfig(translate=4, flip_prob=0.3, crop_size=20, brightness=0.4, contrast=0.2,
                        saturation=0.3, hue=0.1)
    ints, floats = kernel.pack(cfg)
    for key, epoch, index in [(0, 0, 0), (2**63 - 1, 7, 49_999), (123, 2, 10**12)]:
        d = kernel.draws(np.int64(key), np.int64(epoch), np.uint64(index), ints, floats)
        t = twin.draws(key, epoch, index, cfg, (32, 32))
        assert (d[0], d[1], bool(d[2])) == (t["ty"], t["tx"], t["flip"])
        assert list(d[5:9]) == t["factors"] and list(d[9:13].astype(int)) == t["order"]
        origin = kernel._crop_origin(np.int64(key), np.int64(epoch), np.uint64(index), 20, 32, 32)
        assert origin == (t["cy"], t["cx"])


def test_draws_are_per_op_and_cover_their_ranges():
    n = 4000
    flips = [twin.draws(5, 0, i, AugmentConfig(flip_prob=0.25), (32, 32))["flip"] for i in range(n)]
    assert abs(np.mean(flips) - 0.25) < 0.03
    shifts = {twin.draws(5, 0, i, AugmentConfig(translate=2), (32, 32))["ty"] for i in range(200)}
    assert shifts == {-2, -1, 0, 1, 2}
    # Turning on another op never changes an op's own draws (one salt per op).
    for i in range(50):
        a = twin.draws(9, 1, i, AugmentConfig(translate=4), (32, 32))
        b = twin.draws(9, 1, i, AugmentConfig(translate=4, flip_prob=0.5, hue=0.2), (32, 32))
        assert (a["ty"], a["tx"]) == (b["ty"], b["tx"])


def test_kernel_is_independent_of_batch_position_and_threads():
    import numba

    x, idx = _images((32, 32, 3), n=64, seed=2)
    cfg = AUGMENTATIONS["vit"]
    full = kernel.apply(x, idx, 99, 4, cfg)
    perm = np.random.default_rng(3).permutation(64)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        shuffled = kernel.apply(x[perm], idx[perm], 99, 4, cfg)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(shuffled, full[perm])
    np.testing.assert_array_equal(kernel.apply(x[5:6], idx[5:6], 99, 4, cfg), full[5:6])


def test_normalising_lookup_table_matches_normalize_and_twin():
    import torch

    from pipelines.normalization import normalize

    manifest = {"mean": [125.3, 122.9, 113.8], "std": [63.0, 62.1, 66.7]}
    x, idx = _images((32, 32, 3), n=16, seed=4)
    grey = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    lut = normalize(grey, manifest).reshape(3, 256).numpy()
    cfg = AUGMENTATIONS["translate_flip"]
    as_float = kernel.apply(x, idx, 1, 0, cfg, lut=lut)
    as_uint8 = kernel.apply(x, idx, 1, 0, cfg)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, normalize(torch.from_numpy(as_uint8), manifest).numpy())
    np.testing.assert_allclose(as_float, twin.normalize(as_uint8, manifest["mean"], manifest["std"]),
                               rtol=2e-7, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(translate=-1), "translate"), (dict(flip_prob=1.5), "probability"), (dict(flip_prob=-0.1), "probability"),
    (dict(brightness=-0.2), "interval"), (dict(contrast=math.nan), "finite"), (dict(hue=0.7), "hue"),
    (dict(fill=300), "fill"), (dict(crop_size=-3), "crop_size"), (dict(translate=1.5), "integer"),
    (dict(saturation=-1.0), "interval"),
])
def test_bad_augment_configs_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**bad)


def test_presets_and_lookup():
    assert get_augmentation("translate_flip") == AugmentConfig(translate=4, flip_prob=0.5)
    assert get_augmentation("translate2").flip_prob == 0
    vit = get_augmentation("vit")
    assert (vit.crop_size, vit.flip_prob, vit.brightness, vit.hue) == (24, 0.5, 0.4, 0.1)
    assert get_augmentation({"translate": 1}) == AugmentConfig(translate=1)
    with pytest.raises(ConfigError, match="known: none, translate2"):
        get_augmentation("translate3")
    with pytest.raises(ConfigError, match="unknown augmentation keys"):
        get_augmentation({"shift": 2})
    with pytest.raises(ConfigError, match="crop_size=33"):
        AugmentConfig(crop_size=33).check_image((32, 32, 3))
