"""Data on the device: the torch augmentation equals the numba kernel bitwise on real images, and
the stacked batches of R replicas equal the single-run FFCV loader's, batch for batch and digest
for digest."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmc import seeds
from lmc.config import ConfigError
from pipelines import AUGMENTATIONS, AugmentConfig, kernel, make_loader
from pipelines import device_augment as da
from pipelines.normalization import normalize_with
from pipelines.device_data import epoch_order, make_replica_loader, replica_digest
from pipelines_fixtures import cifar_arrays, cifar_train, mnist_train

# Every preset, plus configs that reach what the presets do not: a fill level, a crop with a
# translation, hue shifts up to half a turn, all four jitter ops at once.
CONFIGS = {**AUGMENTATIONS,
           "crop_translate_fill": AugmentConfig(crop_size=19, flip_prob=0.5, translate=2, fill=255),
           "jitter_wide": AugmentConfig(saturation=0.8, hue=0.5, translate=1, fill=200, contrast=0.9,
                                        brightness=0.3)}


@pytest.fixture(scope="module")
def mnist_images():
    from beton_builders import embedded

    x, _ = embedded.load_arrays()["train"]
    return x[:256, :, :, None]


@pytest.fixture(scope="module")
def cifar_images():
    return cifar_arrays()[0][:192]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return mnist_train(tmp_path_factory)


def _nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()


def test_hash_is_splitmix64_in_int64_arithmetic():
    # splitmix64 from 0 (Vigna's reference value), and values whose top bit is set, where int64
    # shifts and remainders would differ from uint64 ones without the care in device_augment.
    assert da.mix64(torch.tensor([0])).item() == da._signed(0xE220A8397B1DCDAF)
    values = [0, 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 123456789012345]
    got = da.mix64(torch.tensor([da._signed(v) for v in values]))
    assert [g % 2**64 for g in got.tolist()] == [int(kernel._mix64(np.uint64(v))) for v in values]
    state = torch.tensor([da._signed(v) for v in values])
    for n in (2, 3, 5, 25, 2**31 - 1):
        expected = [int(kernel._bits(np.uint64(v), 4)) % n for v in values]
        assert da._randint(state, 4, n).tolist() == expected


def test_contrast_mean_is_the_kernels_left_to_right_sum():
    # A pairwise sum (Tensor.sum) differs in the last bits on most of these rows; an image rarely
    # shows it (a value must land next to a rounding boundary), so it is checked here directly.
    grey = torch.from_numpy(np.random.default_rng(5).random((6, 1024)) * 255.0)
    for rows in (grey, grey[:1]):
        expected = []
        for row in rows.tolist():
            total = 0.0
            for value in row:
                total += value
            expected.append(total / len(row))
        assert da._sequential_mean(rows).tolist() == expected
    assert (grey.sum(1) / 1024).tolist() != da._sequential_mean(grey).tolist()


def test_draws_equal_the_kernels():
    cfg = AugmentConfig(translate=4, flip_prob=0.3, crop_size=20, brightness=0.4, contrast=0.2, saturation=0.3,
                        hue=0.1)
    ints, floats = kernel.pack(cfg)
    indices = torch.tensor([0, 1, 7, 49_999, 10**12, 2**40 + 3])
    for key, epoch in [(0, 0), (2**63 - 1, 7), (seeds.aug_key(43), 199)]:
        d = da.draws(key, epoch, indices, cfg, (32, 32))
        for i, index in enumerate(indices.tolist()):
            ref = kernel.draws(np.int64(key), np.int64(epoch), np.uint64(index), ints, floats)
            cy, cx = kernel._crop_origin(np.int64(key), np.int64(epoch), np.uint64(index), 20, 32, 32)
            assert [d["ty"][i].item(), d["tx"][i].item(), float(d["flip"][i])] == ref[:3].tolist()
            assert (d["cy"][i].item(), d["cx"][i].item()) == (cy, cx)
            assert d["factors"][i].tolist() == ref[5:9].tolist()  # float64, exactly
            assert d["order"][i].tolist() == ref[9:].tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_device_augmentation_equals_the_kernel_bitwise_on_real_images(name, mnist_images, cifar_images):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    for images in (mnist_images, cifar_images):
        indices = rng.integers(0, 10**9, len(images))
        for key, epoch in ((seeds.aug_key(0), 0), (seeds.aug_key(118), 5)):
            expected = kernel.apply(images, indices, key, epoch, cfg)
            got = da.augment_on_device(_nchw(images), torch.from_numpy(indices), key, epoch, cfg)
            assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), expected), (name, key, epoch)
        # The normalising lookup table of the CPU loader, float32 out.
        c = images.shape[3]
        lut = normalize_with(torch.arange(256, dtype=torch.uint8).expand(c, 256), torch.full((c, 1), 120.0),
                             torch.full((c, 1), 64.3))
        expected = kernel.apply(images, indices, 5, 2, cfg, lut=lut.numpy())
        got = da.augment_on_device(_nchw(images), torch.from_numpy(indices), 5, 2, cfg, lut)
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), expected)


def test_odd_shapes_single_samples_and_mixed_keys(cifar_images):
    """Non-square images; a batch of one (the sequential contrast mean's one-column case); a
    batch mixing two augmentation keys equals each key's own batch."""
    rng = np.random.default_rng(4)
    odd = rng.integers(0, 256, (24, 26, 30, 3), dtype=np.uint8)
    for cfg in (CONFIGS["crop_translate_fill"], CONFIGS["jitter_wide"], AUGMENTATIONS["vit"]):
        idx = rng.integers(0, 10**6, len(odd))
        assert np.array_equal(da.augment_on_device(_nchw(odd), torch.from_numpy(idx), 9, 1, cfg).numpy(),
                              kernel.apply(odd, idx, 9, 1, cfg))
    cfg = AUGMENTATIONS["vit"]
    images, idx = _nchw(cifar_images[:16]), torch.arange(100, 116)
    one = da.augment_on_device(images[3:4], idx[3:4], 11, 0, cfg)
    assert np.array_equal(one.numpy(), kernel.apply(cifar_images[3:4], idx[3:4].numpy(), 11, 0, cfg))
    keys = torch.tensor([11, 12]).repeat_interleave(8)
    mixed = da.augment_on_device(images, idx, keys, 0, cfg)
    assert torch.equal(mixed[:8], da.augment_on_device(images[:8], idx[:8], 11, 0, cfg))
    assert torch.equal(mixed[8:], da.augment_on_device(images[8:], idx[8:], 12, 0, cfg))


def test_epoch_order_is_ffcvs(mnist):
    for order_seed in (0, 43, 2**40 + 1):
        for batch_size, drop_last in ((128, False), (300, True)):
            loader = make_loader(mnist, batch_size=batch_size, order_seed=order_seed, drop_last=drop_last)
            replicas = make_replica_loader(mnist, batch_size=batch_size, replicas=[(order_seed, 0), (None, 0)],
                                           drop_last=drop_last)
            assert len(replicas) == len(loader)
            for epoch in (0, 1, 9):
                order = replicas.order(epoch)
                assert np.array_equal(order[0], loader.order(epoch))
                assert np.array_equal(order[1], np.arange(len(order[1])))
    assert np.array_equal(np.sort(epoch_order(5, 3, 1000)), np.arange(1000))


def _assert_same_batches(replicas, pairs, beton, epoch, **spec):
    stacked = list(replicas.iter_epoch(epoch))
    for r, (order_seed, aug_seed) in enumerate(pairs):
        single = make_loader(beton, order_seed=order_seed, aug_seed=aug_seed, **spec)
        alone = list(single.iter_epoch(epoch))
        assert len(alone) == len(stacked) == len(single)
        for (x, y, idx), (x1, y1, idx1) in zip(stacked, alone):
            assert x.shape[0] == len(pairs) and x.dtype == x1.dtype and all(t.is_contiguous() for t in (x, y, idx))
            assert torch.equal(x[r], x1) and torch.equal(y[r], y1) and torch.equal(idx[r], idx1)
        assert replicas.describe(r) == single.describe()


def test_replica_batches_equal_the_single_run_loader(mnist):
    # Two replicas share an augmentation seed, two an order seed; 4000 / 300 leaves a last batch of 100.
    pairs = [(1, 2), (3, 2), (1, 9)]
    spec = dict(batch_size=300, augment="translate2", drop_last=False, normalize=True)
    replicas = make_replica_loader(mnist, replicas=pairs, **spec)
    for epoch in (0, 3):
        _assert_same_batches(replicas, pairs, mnist, epoch, **spec)


def test_replica_batches_equal_the_loader_on_colour_images(tmp_path_factory):
    beton = cifar_train(tmp_path_factory, 1000)
    pairs = [(43, 43), (118, 118)]
    for augment, normalize in (("translate_flip", True), ("vit", False)):
        spec = dict(batch_size=256, augment=augment, drop_last=True, normalize=normalize)
        _assert_same_batches(make_replica_loader(beton, replicas=pairs, **spec), pairs, beton, 1, **spec)


def _lmc_loader(argv) -> int:
    """`lmc loader ...` through the stage's own parser (as tests/test_pipelines_cli.py does)."""
    from app.cli import Parser
    from pipelines import cli

    parser = Parser(prog="lmc")
    cli.register(parser.add_subparsers(dest="command", parser_class=Parser))
    args = parser.parse_args(argv)
    return args.func(args)


def test_replica_digests_equal_lmc_loader_digest(mnist, capsys):
    pairs = [(11, 12), (13, 12)]
    digests = replica_digest(mnist, replicas=pairs, augment="translate2", epochs=2, batch_size=500)
    for (order_seed, aug_seed), digest in zip(pairs, digests):
        assert _lmc_loader(["loader", "digest", "--beton", str(mnist), "--order-seed", str(order_seed),
                         "--aug-seed", str(aug_seed), "--epochs", "2", "--batch-size", "128",
                         "--augment", "translate2"]) == 0
        assert json.loads(capsys.readouterr().out) == digest
    # Same augmentation seed: the same augmented samples, in different orders.
    assert [d["by_index_sha256"] for d in digests[0]] == [d["by_index_sha256"] for d in digests[1]]
    assert digests[0][0]["order_sha256"] != digests[1][0]["order_sha256"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(replicas=[]), "non-empty list"),
    (dict(replicas="12"), "non-empty list"),
    (dict(replicas=[(1,)]), "replica 0"),
    (dict(replicas=[(1, 2), (-1, 2)]), "replica 1 order_seed"),
    (dict(replicas=[(1, 2.5)]), "replica 0 aug_seed"),
    (dict(replicas=[(1, 2)], batch_size=0), "batch_size"),
    (dict(replicas=[(1, 2)], augment="mirror"), "unknown augmentation"),
    (dict(replicas=[(1, 2)], augment=AugmentConfig(crop_size=30)), "crop_size=30"),
    (dict(replicas=[(1, 2)], drop_last="yes"), "drop_last"),
    (dict(replicas=[(1, 2)], device="tpu"), "device"),
])
def test_bad_input_is_refused_before_any_work(mnist, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_replica_loader(mnist, **{"batch_size": 64, **kwargs})


def test_bad_replica_and_images_are_refused(mnist):
    loader = make_replica_loader(mnist, batch_size=64, replicas=[(1, 2)])
    with pytest.raises(ConfigError, match="replicas 0..0"):
        loader.replica(1)
    with pytest.raises(ValueError, match="uint8 images"):
        da.augment_on_device(torch.zeros(2, 1, 8, 8), torch.arange(2), 0, 0, AugmentConfig())
