"""MNIST / Fashion-MNIST builders on the real idx files, plus every bad-idx-input path."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from beton_builders.idx import encode_idx
from lmc.manifest import check_contents, load_verified
from beton_builders.sources import SourceError
from beton_builders.mnist import FASHION_MNIST, MNIST
from beton_builders.readback import read_beton
from beton_fixtures import idx_reference, listing, need, need_fashion

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# The bytes every machine must produce from the canonical MNIST (builder_version 2, FFCV 1.0.2,
# one writer worker, 2 MiB pages). A deliberate format change updates these and BUILDER_VERSION.
GOLDEN_SHA256 = {"train": "3965173b983d54723f8feb9e4f0f387ce284b3693d85944ce4a666b88c8bf1e8",
                 "test": "9841398e6874a7562e1e07fdf44e5a55eb3c9de89ca2eb5caf6838d99ef266b0"}


@pytest.fixture(scope="module")
def full_mnist(tmp_path_factory):
    """Full MNIST (70k) built once for this module (its build time is benchmarks/bench_betons.py's)."""
    src = need("mnist")
    out = tmp_path_factory.mktemp("mnist")
    return src, MNIST.build(out, src=src, progress=False)


def test_full_mnist_decodes_to_the_idx_pixels_and_labels(full_mnist):
    src, built = full_mnist
    for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
        x, labels = read_beton(built[split])
        assert x.shape == (n, 28, 28, 1)
        np.testing.assert_array_equal(x[..., 0], idx_reference(src / f"{prefix}-images-idx3-ubyte.gz"))
        np.testing.assert_array_equal(labels["label"], idx_reference(src / f"{prefix}-labels-idx1-ubyte.gz"))
        m = load_verified(built[split])
        check_contents(built[split], m)
        assert m["num_samples"] == n and m["image_shape"] == [28, 28, 1] and m["num_classes"] == 10
        assert all(s["canonical"] for s in m["sources"]), "the shared MNIST is the canonical content"
    m = load_verified(built["train"])
    assert [m["class_counts"][str(c)] for c in range(10)] == MNIST_TRAIN_COUNTS
    assert m["mean"][0] == pytest.approx(33.3184, abs=1e-3) and m["std"][0] == pytest.approx(78.5675, abs=1e-3)
    assert m["writer"]["num_workers"] == 1 and m["writer"]["deterministic"]
    assert {s["path"] for s in m["sources"]} == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}
    sha = hashlib.sha256((src / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert sha == "94d6c1bb88e50b3e79ece8adf38cd67d147277a9865362fcfcc967d68126af11"
    assert sha in {s["sha256"] for s in m["sources"]}


def test_rebuild_is_byte_identical(full_mnist, tmp_path):
    src, built = full_mnist
    for split, digest in GOLDEN_SHA256.items():
        assert hashlib.sha256(built[split].read_bytes()).hexdigest() == digest, \
            f"{split}.beton differs from the bytes every machine produced so far"
    again = MNIST.build(tmp_path, splits=("test",), src=src, progress=False)
    assert load_verified(again["test"])["beton_sha256"] == load_verified(built["test"])["beton_sha256"]
    assert again["test"].read_bytes() == built["test"].read_bytes()


def test_torchvision_raw_folder_uncompressed(tmp_path):
    """torchvision's <root>/MNIST/raw with extracted idx files (its layout after download)."""
    src = need("mnist")
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = idx_reference(src / "t10k-images-idx3-ubyte.gz")[:300]
    y = idx_reference(src / "t10k-labels-idx1-ubyte.gz")[:300]
    (raw / "t10k-images-idx3-ubyte").write_bytes(encode_idx(x))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(y))
    built = MNIST.build(tmp_path / "out", splits=("test",), src=tmp_path / "tv", progress=False)
    got, labels = read_beton(built["test"])
    np.testing.assert_array_equal(got[..., 0], x)
    np.testing.assert_array_equal(labels["label"], y)
    assert not load_verified(built["test"])["sources"][0]["canonical"]  # a 300-image subset


def test_fashion_mnist_from_debian_package(tmp_path):
    src = need_fashion()
    built = FASHION_MNIST.build(tmp_path, splits=("test",), progress=False)  # default src: the package
    x, labels = read_beton(built["test"])
    np.testing.assert_array_equal(x[..., 0], idx_reference(src / "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(labels["label"], idx_reference(src / "t10k-labels-idx1-ubyte.gz"))
    m = load_verified(built["test"])
    assert m["dataset"] == "fashion_mnist" and m["label_names"][9] == "Ankle boot"
    assert all(s["canonical"] for s in m["sources"]) and set(m["class_counts"].values()) == {1000}


# -- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_idx():
    src = need("mnist")
    return (idx_reference(src / "t10k-images-idx3-ubyte.gz")[:200].copy(),
            idx_reference(src / "t10k-labels-idx1-ubyte.gz")[:200].copy())


def _bad_variants(x, y):
    images, labels = encode_idx(x), encode_idx(y)
    wrong_count = bytearray(images)
    wrong_count[4:8] = (199).to_bytes(4, "big")  # header says 199 images, data holds 200
    out_of_range = y.copy()
    out_of_range[17] = 10
    return {
        "truncated": (images[:-100], labels, "t10k-images-idx3-ubyte", "truncated"),
        "wrong magic": (b"\x50\x4b\x03\x04" + images[4:], labels, "t10k-images-idx3-ubyte", "wrong magic"),
        "count vs size": (bytes(wrong_count), labels, "t10k-images-idx3-ubyte", "disagrees with the file size"),
        "swapped": (labels, images, "t10k-images-idx3-ubyte", "swapped"),
        "pair mismatch": (images, encode_idx(y[:150]), "t10k-labels-idx1-ubyte", "not a pair"),
        "label range": (images, encode_idx(out_of_range), "t10k-labels-idx1-ubyte", "out of range"),
        "truncated gzip": (gzip.compress(images)[:-50], labels, "t10k-images-idx3-ubyte.gz", "gzip"),
    }


@pytest.mark.parametrize("case", ["truncated", "wrong magic", "count vs size", "swapped", "pair mismatch",
                                  "label range", "truncated gzip"])
def test_bad_idx_names_the_file_and_leaves_nothing(small_idx, tmp_path, case):
    images, labels, culprit, problem = _bad_variants(*small_idx)[case]
    src = tmp_path / "src"
    src.mkdir()
    img_name = "t10k-images-idx3-ubyte" + (".gz" if case == "truncated gzip" else "")
    (src / img_name).write_bytes(images)
    (src / "t10k-labels-idx1-ubyte").write_bytes(labels)
    out = tmp_path / "out"
    with pytest.raises(SourceError) as err:
        MNIST.build(out, splits=("test",), src=src, progress=False)
    assert culprit in str(err.value) and problem in str(err.value)
    assert listing(out) == []


def test_cli_bad_input_is_one_line_exit_2(small_idx, tmp_path, capsys):
    from app.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "t10k-images-idx3-ubyte").write_bytes(encode_idx(small_idx[0])[:-1])
    (src / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(small_idx[1]))
    out = tmp_path / "out"
    rc = main(["beton", "build", "mnist", "--src", str(src), "--out", str(out), "--split", "test", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "t10k-images-idx3-ubyte" in err[0] and "truncated" in err[0]
    assert listing(out) == []
