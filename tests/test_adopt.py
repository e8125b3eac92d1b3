"""`lmc beton adopt`: .beton files written by FFCV's own DatasetWriter (not by this package),
from real images, with field names of their writer's choosing, trained on through the seeded loader."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lmc import paths
from lmc.ffcv_compat import import_ffcv
from beton_fixtures import need


def ffcv_write(path, fields: dict, rows: list[tuple]) -> None:
    """What a researcher's own script does: FFCV's DatasetWriter, nothing of ours."""
    import_ffcv()
    from ffcv.writer import DatasetWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    DatasetWriter(str(path), fields, num_workers=1, page_size=1 << 21).from_indexed_dataset(rows)


@pytest.fixture(scope="module")
def cifar():
    data = np.load(need("cifar10-subset-5k/cifar10_subset_5k.npz"))
    return (data["x_train"][:300], data["y_train"][:300].astype(int),
            data["x_test"][:100], data["y_test"][:100].astype(int))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, cifar):
    """Three foreign files: RGB raw (label first, other names), RGB JPEG (plus a float field),
    and MNIST-like grey digits as a (28, 28, 1) NDArrayField named x / y."""
    import_ffcv()
    from ffcv.fields import FloatField, IntField, NDArrayField, RGBImageField

    from beton_builders import embedded

    root = tmp_path_factory.mktemp("foreign")
    x, y, xt, yt = cifar
    out = {"rgb_raw": root / "cifar_raw" / "train.beton", "jpg": root / "betons" / "foreign" / "train.beton",
           "jpg_test": root / "betons" / "foreign" / "test.beton", "grey": root / "digits" / "train.beton"}
    ffcv_write(out["rgb_raw"], {"target": IntField(), "picture": RGBImageField(write_mode="raw")},
               [(int(y[i]), x[i]) for i in range(len(x))])
    for key, (xs, ys) in (("jpg", (x, y)), ("jpg_test", (xt, yt))):
        ffcv_write(out[key], {"img": RGBImageField(write_mode="jpg", jpeg_quality=90), "cls": IntField(),
                              "weight": FloatField()}, [(xs[i], int(ys[i]), 1.0) for i in range(len(xs))])
    digits, labels = embedded.load_arrays()["train"]
    keep = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    grey = np.ascontiguousarray(digits[keep].reshape(-1, 28, 28, 1))
    ffcv_write(out["grey"], {"x": NDArrayField(dtype=np.dtype("uint8"), shape=(28, 28, 1)), "y": IntField()},
               [(grey[i], int(labels[keep][i])) for i in range(len(keep))])
    out["grey_arrays"] = (grey, labels[keep].astype(int))
    return out


def run_main(capsys, *argv: str) -> tuple[int, str, list[str]]:
    from app.cli import main

    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def test_adopt_raw_rgb_with_its_own_field_names(foreign, cifar, capsys):
    from beton_builders.writer import channel_stats
    from pipelines import load_split

    beton = foreign["rgb_raw"]
    with pytest.raises(Exception, match="lmc beton adopt"):  # before adoption: the loader says what to do
        load_split(beton)
    rc, out, err = run_main(capsys, "beton", "adopt", str(beton), "--num-classes", "10", "--quiet")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["fields"] == {"image": "picture", "label": "target"} and summary["image_encoding"] == "rgb-raw"
    m = json.loads(paths.manifest_path(beton).read_text())
    x, y = cifar[:2]
    assert (m["num_samples"], m["image_shape"], m["num_classes"]) == (300, [32, 32, 3], 10)
    assert m["class_counts"] == {str(k): int(v) for k, v in enumerate(np.bincount(y, minlength=10))}
    assert (m["mean"], m["std"]) == channel_stats(x)  # raw samples: the exact statistics
    assert m["field_order"] == ["target", "picture"] and m["adopted"]["decoded"] == 300
    assert run_main(capsys, "beton", "verify", str(beton))[0] == 0
    images, labels = load_split(beton)  # through FFCV's decoder: the very pixels written
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), x) and np.array_equal(labels.numpy(), y)


def test_adopt_grey_ndarray_digits_match_our_own_beton_bitwise(foreign, tmp_path, capsys):
    """The same digits written by FFCV (fields x, y) and by our builder: identical loader digests."""
    from beton_builders.writer import write_arrays
    from pipelines import loader_digest

    rc, out, err = run_main(capsys, "beton", "adopt", str(foreign["grey"]), "--name", "digits", "--quiet")
    assert rc == 0, err
    assert json.loads(out)["image_encoding"] == "raw" and json.loads(out)["num_classes"] == 10
    grey, labels = foreign["grey_arrays"]
    ours = tmp_path / "ours" / "train.beton"
    write_arrays(grey, labels, ours, dataset="digits", split="train", num_classes=10, progress=False)
    assert json.loads(paths.manifest_path(ours).read_text())["mean"] == \
        json.loads(paths.manifest_path(foreign["grey"]).read_text())["mean"]
    kw = dict(order_seed=3, aug_seed=4, augment="translate2", epochs=2, batch_size=32)
    assert loader_digest(foreign["grey"], **kw) == loader_digest(ours, **kw)


def test_adopt_jpeg_then_train_on_it(foreign, cifar, capsys):
    from experiments.training import train
    from lmc.io import read_jsonl
    from pipelines import load_split, make_loader
    from conftest import small_config

    for key in ("jpg", "jpg_test"):
        rc, out, err = run_main(capsys, "beton", "adopt", str(foreign[key]), "--quiet")
        assert rc == 0, err
    m = json.loads(paths.manifest_path(foreign["jpg"]).read_text())
    assert m["dataset"] == "foreign" and m["split"] == "train" and m["image_encoding"] == "jpg"
    assert m["field_map"] == {"image": "img", "label": "cls"} and m["fields"]["weight"] == {"type": "FloatField"}
    images, labels = load_split(foreign["jpg"])
    x, y = cifar[:2]
    pixels = images.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(labels.numpy(), y)
    # JPEG at quality 90 with 4:2:0 chroma on 32x32 images: close (about 4 levels), not equal;
    # a wrong decode (channel order, stride) would be tens of levels off.
    assert np.abs(pixels.astype(int) - x).mean() < 8
    # The manifest's statistics are those of the pixels the loader decodes.
    assert np.allclose(m["mean"], pixels.reshape(-1, 3).mean(0), rtol=0, atol=1e-9)
    batches = [b for b in make_loader(foreign["jpg"], batch_size=64, order_seed=1, aug_seed=1,
                                      augment="translate_flip").iter_epoch(0)]
    assert sum(len(b[1]) for b in batches) == 300 and batches[0][0].dtype.is_floating_point

    root = foreign["jpg"].parents[2]  # <root>/betons/foreign/train.beton: usable as --dataset foreign
    run = train(small_config(dataset="foreign", epochs=1, width=16), root, progress=False)
    assert [r["epoch"] for r in read_jsonl(run / paths.METRICS)] == [1]


def test_a_sample_of_a_huge_file_and_readoption(foreign, capsys):
    beton = foreign["rgb_raw"]
    rc, out, err = run_main(capsys, "beton", "adopt", str(beton), "--sample", "25", "--quiet")
    assert rc == 0, err
    adopted = json.loads(paths.manifest_path(beton).read_text())["adopted"]
    assert adopted["decoded"] == 25 and adopted["of"] == 300 and "25 evenly spaced" in adopted["statistics_from"]


def test_bad_files_are_one_line_exit_2(foreign, cifar, tmp_path, capsys, mnist_small):
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    x, y = cifar[:2]
    cases = []
    junk = tmp_path / "junk.beton"
    junk.write_bytes(bytes(range(256)) * 40)
    cases.append((junk, [], "FFCV cannot read its header"))
    cut = tmp_path / "cut" / "train.beton"
    cut.parent.mkdir()
    cut.write_bytes(foreign["jpg"].read_bytes()[:5000])
    cases.append((cut, [], "train.beton"))
    no_label = tmp_path / "nolabel.beton"
    ffcv_write(no_label, {"img": RGBImageField(write_mode="raw")}, [(x[i],) for i in range(10)])
    cases.append((no_label, [], "no label field"))
    sizes = tmp_path / "sizes.beton"
    ffcv_write(sizes, {"img": RGBImageField(write_mode="raw"), "y": IntField()},
               [(x[i][: 32 - i % 2], int(y[i])) for i in range(10)])
    cases.append((sizes, [], "images of several sizes"))
    cases.append((foreign["grey"], ["--num-classes", "5"], "does not fit --num-classes 5"))
    damaged = tmp_path / "damaged.beton"
    data = bytearray(foreign["jpg_test"].read_bytes())
    import_ffcv()
    from ffcv.reader import Reader

    meta = Reader(str(foreign["jpg_test"])).metadata["f0"]
    start = int(meta[7]["data_ptr"])
    data[start:start + 4] = b"\0\0\0\0"  # the JPEG's start-of-image marker of sample 7
    damaged.write_bytes(bytes(data))
    cases.append((damaged, [], "sample 7 does not decode"))
    cases.append((paths.beton_path("mnist_small", "train"), [], "already has a manifest written by `lmc beton build`"))
    cases.append((tmp_path / "absent.beton", [], "no such file"))
    capsys.readouterr()  # FFCV's own progress bars above
    for path, extra, needle in cases:
        rc, out, err = run_main(capsys, "beton", "adopt", str(path), *extra, "--quiet")
        assert rc == 2 and len(err) == 1 and needle in err[0], (path, err)
        if path != paths.beton_path("mnist_small", "train"):
            assert not paths.manifest_path(path).exists() or path == foreign["grey"]
