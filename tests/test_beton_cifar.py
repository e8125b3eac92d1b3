"""CIFAR-10/100 builders on standard python-pickle fixtures written from real CIFAR images."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from beton_builders.cifar import CIFAR10, CIFAR100, load_pickle
from lmc.manifest import check_contents, load_verified
from beton_builders.sources import SourceError
from beton_builders.readback import read_beton
from beton_fixtures import (CIFAR100_COARSE_OF_FINE, listing, need, py2_pickle, tar_gz, write_cifar10,
                            write_cifar100)


@pytest.fixture(scope="module")
def cifar10_real():
    d = np.load(need("cifar10-subset-5k/cifar10_subset_5k.npz"))
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def cifar10_dist(cifar10_real, tmp_path_factory):
    """The 4,000 + 1,000 real images as cifar-10-batches-py/ (5 train batches) and its .tar.gz."""
    root = tmp_path_factory.mktemp("cifar10")
    r = cifar10_real
    folder = write_cifar10(root, r["x_train"], r["y_train"], r["x_test"], r["y_test"])
    return folder, tar_gz(folder, root / "cifar-10-python.tar.gz")


def test_py2_style_pickle_reads_like_the_2009_files():
    raw = py2_pickle({b"data": np.arange(6, dtype=np.uint8).reshape(1, 6), b"labels": [3]})
    assert b"_codecs" not in raw and b"cnumpy.core.multiarray\n" in raw
    d = load_pickle(raw, "x")
    assert d["labels"] == [3] and d["data"].tolist() == [[0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("which", ["folder", "tar.gz"])
def test_cifar10_decodes_to_the_real_pixels(cifar10_real, cifar10_dist, tmp_path, which):
    src = cifar10_dist[0] if which == "folder" else cifar10_dist[1]
    built = CIFAR10.build(tmp_path, src=src, progress=False)
    for split in ("train", "test"):
        x, labels = read_beton(built[split])
        np.testing.assert_array_equal(x, cifar10_real[f"x_{split}"])
        np.testing.assert_array_equal(labels["label"], cifar10_real[f"y_{split}"])
        m = load_verified(built[split])
        check_contents(built[split], m)
        assert m["label_names"][0] == "airplane" and m["image_shape"] == [32, 32, 3]
    m = load_verified(built["train"])
    if which == "folder":
        assert [s["path"] for s in m["sources"]] == ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)]
    else:
        (archive,) = m["sources"]
        assert archive["path"] == "cifar-10-python.tar.gz" and archive["root"] == "cifar-10-batches-py/"
        assert len(archive["members"]) == 6 and len(archive["sha256"]) == 64


def test_folder_and_archive_give_the_same_bytes(cifar10_dist, tmp_path):
    a = CIFAR10.build(tmp_path / "a", splits=("test",), src=cifar10_dist[0], progress=False)["test"]
    b = CIFAR10.build(tmp_path / "b", splits=("test",), src=cifar10_dist[1], progress=False)["test"]
    assert a.read_bytes() == b.read_bytes()
    folder_members = load_verified(a)["sources"]
    archive_members = load_verified(b)["sources"][0]["members"]
    assert folder_members == archive_members  # same per-file sha256 either way


def test_cifar100_keeps_fine_and_coarse_labels(tmp_path):
    d = np.load(need("cifar100-test-first20/cifar100_test_first20.npz"))
    x, fine = d["x_test"], d["y_test_fine"].astype(np.int64)
    folder = write_cifar100(tmp_path / "src", x[::-1], fine[::-1], x, fine)
    for src in (folder, tar_gz(folder, tmp_path / "src" / "cifar-100-python.tar.gz")):
        built = CIFAR100.build(tmp_path / src.name, src=src, progress=False)
        got, labels = read_beton(built["test"])
        np.testing.assert_array_equal(got, x)
        np.testing.assert_array_equal(labels["label"], fine)
        np.testing.assert_array_equal(labels["coarse_label"], CIFAR100_COARSE_OF_FINE[fine])
        m = load_verified(built["test"])
        check_contents(built["test"], m)
        assert m["num_classes"] == 100 and m["field_order"] == ["image", "label", "coarse_label"]
        assert m["label_info"]["coarse_label"]["num_classes"] == 20
        assert sum(m["label_info"]["coarse_label"]["class_counts"].values()) == 20
        np.testing.assert_array_equal(read_beton(built["train"])[0], x[::-1])


def _rewrite(folder, name, mutate):
    d = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    mutate(d)
    (folder / name).write_bytes(py2_pickle(d))


@pytest.mark.parametrize("case,culprit,problem", [
    ("missing key", "data_batch_3", "missing key 'labels'"),
    ("label range", "test_batch", "out of range"),
    ("truncated", "data_batch_2", "not a readable CIFAR pickle"),
    ("bad data", "data_batch_1", "expected uint8 N x 3072"),
    ("code in pickle", "data_batch_4", "refusing to load"),
    ("no meta key", "batches.meta", "missing key 'label_names'"),
])
def test_bad_cifar_names_the_file_and_leaves_nothing(cifar10_real, tmp_path, case, culprit, problem):
    r = cifar10_real
    folder = write_cifar10(tmp_path / "src", r["x_train"][:100], r["y_train"][:100], r["x_test"][:20],
                           r["y_test"][:20])
    if case == "missing key":
        _rewrite(folder, culprit, lambda d: d.pop(b"labels"))
    elif case == "label range":
        _rewrite(folder, culprit, lambda d: d[b"labels"].__setitem__(5, 10))
    elif case == "truncated":
        (folder / culprit).write_bytes((folder / culprit).read_bytes()[:5000])
    elif case == "bad data":
        _rewrite(folder, culprit, lambda d: d.__setitem__(b"data", d[b"data"][:, :3000]))
    elif case == "code in pickle":
        (folder / culprit).write_bytes(pickle.dumps({b"data": __import__("os").getcwd}, protocol=2))
    else:
        _rewrite(folder, culprit, lambda d: d.pop(b"label_names"))
    out = tmp_path / "out"
    with pytest.raises(SourceError) as err:
        CIFAR10.build(out, src=folder, progress=False)
    assert culprit in str(err.value) and problem in str(err.value)
    assert listing(out) == []


def test_missing_batch_is_named(cifar10_real, tmp_path):
    r = cifar10_real
    folder = write_cifar10(tmp_path / "src", r["x_train"][:50], r["y_train"][:50], r["x_test"][:10], r["y_test"][:10])
    (folder / "data_batch_5").unlink()
    with pytest.raises(SourceError, match="data_batch_5: missing"):
        CIFAR10.build(tmp_path / "out", src=folder, progress=False)
    assert listing(tmp_path / "out") == []
