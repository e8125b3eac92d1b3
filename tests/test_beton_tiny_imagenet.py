"""Tiny-ImageNet-200: the real val tar, and train/val fixtures (folder and zip) made from its JPEGs."""
from __future__ import annotations

import numpy as np
import pytest

from beton_builders import tiny_imagenet
from lmc.manifest import check_contents, load_verified
from beton_builders.sources import SourceError
from beton_builders.readback import read_beton
from beton_fixtures import listing, need, pil_rgb, tiny_val, write_tiny_imagenet, zip_folder

VAL_TAR = "tiny-imagenet-200-val.tar"


@pytest.fixture(scope="module")
def val_tar():
    return need(VAL_TAR)


@pytest.fixture(scope="module")
def fixture_dist(val_tar, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folder, expected = write_tiny_imagenet(root, val_tar)
    return folder, zip_folder(folder, root / "tiny-imagenet-200.zip"), expected


def test_real_val_tar_matches_pillow_on_all_10000(val_tar, tmp_path):
    """The shared copy's 10,000 val images: labels from the annotations, pixels equal to an
    independent decoder's (Pillow) -- the decode does not depend on the library."""
    built = tiny_imagenet.build(tmp_path, splits=("test",), src=val_tar, progress=False)
    x, labels = read_beton(built["test"])
    wnids, ann, jpegs = tiny_val(val_tar)
    assert x.shape == (10000, 64, 64, 3)
    np.testing.assert_array_equal(labels["label"], [wnids.index(w) for _, w in ann])
    reference = np.stack([pil_rgb(jpegs[fname]) for fname, _ in ann])
    differ = [ann[i][0] for i in np.flatnonzero((x != reference).any(axis=(1, 2, 3)))]
    assert differ == [], f"{len(differ)} images decode differently from Pillow, e.g. {differ[:3]}"
    m = load_verified(built["test"])
    check_contents(built["test"], m)
    assert m["greyscale_to_rgb"] == 168 and set(m["class_counts"].values()) == {50}
    assert m["label_names"] == wnids and "official val" in m["source_note"]
    (archive,) = m["sources"]
    assert archive["path"] == VAL_TAR and archive["sha256"].startswith("eac58e05")
    assert {"val/images/"} <= {r["path"] for r in archive["members"]}


@pytest.mark.parametrize("which", ["folder", "zip"])
def test_fixture_train_and_val_decode_exactly(fixture_dist, tmp_path, which):
    folder, archive, expected = fixture_dist
    built = tiny_imagenet.build(tmp_path, src=folder if which == "folder" else archive, progress=False)
    for split in ("train", "test"):
        x, labels = read_beton(built[split])
        np.testing.assert_array_equal(labels["label"], [lab for _, lab in expected[split]])
        np.testing.assert_array_equal(x, np.stack([pil_rgb(b) for b, _ in expected[split]]))
        check_contents(built[split], load_verified(built[split]))
    m = load_verified(built["train"])
    assert m["greyscale_to_rgb"] > 0, "the fixture includes greyscale training images"
    assert m["num_classes"] == 200 and m["image_shape"] == [64, 64, 3]


def test_folder_and_zip_give_the_same_bytes(fixture_dist, tmp_path):
    folder, archive, expected = fixture_dist
    a = tiny_imagenet.build(tmp_path / "a", splits=("train",), src=folder, progress=False)["train"]
    b = tiny_imagenet.build(tmp_path / "b", splits=("train",), src=archive, progress=False)["train"]
    assert a.read_bytes() == b.read_bytes()
    folder_recs = load_verified(a)["sources"]
    assert load_verified(b)["sources"][0]["members"] == folder_recs
    # Small class folders are listed file by file: wnids.txt + every training JPEG.
    assert len(folder_recs) == 1 + len(expected["train"]) and all(len(r["sha256"]) == 64 for r in folder_recs)


def _copy(folder, tmp_path):
    import shutil

    dst = tmp_path / "src" / "tiny-imagenet-200"
    shutil.copytree(folder, dst)
    return dst


def test_unknown_class_in_annotations(fixture_dist, tmp_path):
    src = _copy(fixture_dist[0], tmp_path)
    ann = src / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines(keepends=True)
    lines[6] = lines[6].replace(lines[6].split("\t")[1], "n99999999")
    ann.write_text("".join(lines))
    with pytest.raises(SourceError) as err:
        tiny_imagenet.build(tmp_path / "out", src=src, progress=False)
    assert "val_annotations.txt line 7" in str(err.value) and "'n99999999'" in str(err.value)
    assert "not in wnids.txt" in str(err.value)
    assert listing(tmp_path / "out") == []


def test_unknown_train_class_and_missing_class(fixture_dist, tmp_path):
    src = _copy(fixture_dist[0], tmp_path)
    (src / "train" / "n00000001" / "images").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"\['n00000001'\] are not in wnids.txt"):
        tiny_imagenet.build(tmp_path / "out", splits=("train",), src=src, progress=False)
    (src / "train" / "n00000001" / "images").rmdir()
    (src / "train" / "n00000001").rmdir()
    first = (src / "wnids.txt").read_text().split()[0]
    for p in (src / "train" / first / "images").iterdir():
        p.unlink()
    with pytest.raises(SourceError, match=f"train/{first}/images: missing or without JPEGs"):
        tiny_imagenet.build(tmp_path / "out", splits=("train",), src=src, progress=False)
    assert listing(tmp_path / "out") == []


def test_corrupt_jpeg_and_val_only_copy(fixture_dist, val_tar, tmp_path):
    src = _copy(fixture_dist[0], tmp_path)
    victim = sorted((src / "val" / "images").iterdir())[3]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(SourceError, match=f"{victim.name}: not a decodable JPEG"):
        tiny_imagenet.build(tmp_path / "out", src=src, progress=False)
    with pytest.raises(SourceError, match="no training images"):
        tiny_imagenet.build(tmp_path / "out", splits=("train",), src=val_tar, progress=False)
    assert listing(tmp_path / "out") == []
