"""Derived image datasets (beton_builders/derived.py): Tiny-ImageNet's val images shrunk to 32x32
and cut into train and test splits, the ViT study's offline pretraining source."""
from __future__ import annotations

import numpy as np
import pytest

from beton_builders import derived
from beton_builders.prepare import DataSpec, ensure_dataset
from beton_builders.readback import read_beton
from beton_fixtures import need, write_tiny_imagenet
from lmc import paths
from lmc.errors import UserError

OPTIONS = (("from_split", "test"), ("size", 32), ("test_per_class", 1))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny-imagenet-200/ folder whose val split holds the first 3,000 real val images (2+ per class)."""
    folder, _ = write_tiny_imagenet(tmp_path_factory.mktemp("tiny"), need("tiny-imagenet-200-val.tar"),
                                    per_class=1, first_class_extra=0, val_count=3000)
    return folder


def test_shrunk_and_resplit_val_images_rebuild_byte_for_byte(tiny_folder, tmp_path):
    import cv2

    import shutil

    spec = DataSpec("tin32", "tiny_imagenet", src=str(tiny_folder), options=OPTIONS)
    built = [ensure_dataset(spec, tmp_path / "a")]
    # The base .betons are the tiny_imagenet builder's (tested for determinism on their own).
    shutil.copytree(paths.beton_dir("tiny_imagenet", tmp_path / "a"), paths.beton_dir("tiny_imagenet", tmp_path / "b"))
    built.append(ensure_dataset(spec, tmp_path / "b"))
    for split in ("train", "test"):
        assert built[0][split].read_bytes() == built[1][split].read_bytes()

    base_x, base_labels = read_beton(paths.beton_path("tiny_imagenet", "test", tmp_path / "a"))
    base_y = base_labels["label"]
    (train_x, train_l), (test_x, test_l) = (read_beton(built[0][s]) for s in ("train", "test"))
    assert train_x.shape[1:] == test_x.shape[1:] == (32, 32, 3)
    assert len(train_x) + len(test_x) == len(base_x)
    # The last image of each class (in the val annotations' order) is the test split.
    train_idx, test_idx = derived.split_per_class(base_y, 1)
    last = {label: i for i, label in enumerate(base_y)}
    assert test_idx.tolist() == sorted(last.values())
    np.testing.assert_array_equal(test_l["label"], base_y[test_idx])
    np.testing.assert_array_equal(train_l["label"], base_y[train_idx])
    # Every pixel is its 2x2 block's mean rounded half up: OpenCV's area interpolation.
    expected = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA) for img in base_x[train_idx]])
    np.testing.assert_array_equal(train_x, expected)
    np.testing.assert_array_equal(test_x, derived.downscale(base_x[test_idx], 32))


def test_downscale_is_the_block_mean_rounded_half_up():
    x = np.array([[[[0], [1]], [[1], [0]]], [[[255], [254]], [[255], [255]]]], np.uint8)  # two 2x2 images
    assert derived.downscale(x, 1).ravel().tolist() == [1, 255]  # 0.5 -> 1, 254.75 -> 255
    with pytest.raises(UserError, match="must divide"):
        derived.downscale(np.zeros((1, 64, 64, 3), np.uint8), 24)


@pytest.mark.parametrize("options, message", [
    ((("size", 32), ("colour", "grey")), "unknown option 'colour'"),
    ((("size", -1),), "size=-1 must be a non-negative integer"),
    ((("test_per_class", 5),), "test_per_class needs from_split"),
    ((("from_split", "val"),), "from_split='val' must be one of train, test"),
])
def test_bad_options_are_one_line_errors(options, message, tmp_path):
    with pytest.raises(UserError, match=message):
        ensure_dataset(DataSpec("bad", "tiny_imagenet", options=options), tmp_path)
    assert not paths.beton_dir("bad", tmp_path).exists() or not any(paths.beton_dir("bad", tmp_path).glob("*.beton"))


def test_a_class_too_small_to_hold_out_is_refused():
    with pytest.raises(UserError, match="class 1 has 2 images"):
        derived.split_per_class(np.array([0, 0, 0, 1, 1]), 2)
