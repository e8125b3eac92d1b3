"""The generic npz/npy path, the embedded MNIST-5k, JPEG storage, the writer and `lmc beton`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from beton_builders import arrays, embedded, registry
from lmc.manifest import ManifestError, check_contents, load_verified
from beton_builders.sources import SourceError
from beton_builders.readback import read_beton
from beton_builders.writer import channel_stats, write_arrays
from beton_fixtures import listing, need
from lmc import paths

CIFAR5K = "cifar10-subset-5k/cifar10_subset_5k.npz"


@pytest.fixture(scope="module")
def cifar5k():
    path = need(CIFAR5K)
    d = np.load(path)
    return path, {k: d[k] for k in d.files}


def test_registry_lists_every_dataset():
    assert set(registry.DATASETS) == {"mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100",
                                      "tiny_imagenet", "npz", "text"}
    with pytest.raises(ValueError, match="known datasets: cifar10, cifar100"):
        registry.get("imagenet")


def test_npz_with_split_keys_builds_both_splits(cifar5k, tmp_path):
    path, real = cifar5k
    built = arrays.build(tmp_path, src=path, progress=False)
    for split in ("train", "test"):
        x, labels = read_beton(built[split])
        np.testing.assert_array_equal(x, real[f"x_{split}"])
        np.testing.assert_array_equal(labels["label"], real[f"y_{split}"])
        m = load_verified(built[split])
        check_contents(built[split], m)
        assert m["dataset"] == "cifar10_subset_5k" and m["num_classes"] == 10
        assert m["sources"][0]["sha256"].startswith("5e81f99f")


def test_npz_x_y_and_npy_folder(cifar5k, tmp_path):
    _, real = cifar5k
    x, y = real["x_test"][:100], real["y_test"][:100]
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    built = arrays.build(tmp_path / "a", splits=("test",), src=tmp_path / "mine.npz", progress=False)
    assert list(built) == ["test"]
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "x.npy", x[..., 0])  # grey N×H×W works too
    np.save(folder / "y.npy", y.astype(np.int32))
    built_b = arrays.build(tmp_path / "b", src=folder, num_classes=12, progress=False)
    got, labels = read_beton(built_b["train"])
    np.testing.assert_array_equal(got[..., 0], x[..., 0])
    assert load_verified(built_b["train"])["num_classes"] == 12
    built_c = arrays.build(tmp_path / "c", src=folder / "x.npy", progress=False)
    assert read_beton(built_c["train"])[1]["label"].tolist() == y.tolist()


@pytest.mark.parametrize("case,problem", [
    ("no x/y", "no 'x' and 'y' arrays"),
    ("float images", "images must be uint8"),
    ("negative label", "must be non-negative"),
    ("label range", "out of range for 3 classes"),
    ("count", "100 images but 99 labels"),
    ("float labels", "must be integers"),
    ("not an npz", "not a readable .npz"),
])
def test_bad_arrays_name_the_file_and_leave_nothing(cifar5k, tmp_path, case, problem):
    _, real = cifar5k
    x, y = real["x_test"][:100], real["y_test"][:100].astype(np.int64)
    src = tmp_path / "bad.npz"
    if case == "no x/y":
        np.savez(src, images=x, labels=y)
    elif case == "float images":
        np.savez(src, x=x.astype(np.float32), y=y)
    elif case == "negative label":
        np.savez(src, x=x, y=np.where(np.arange(100) == 7, -1, y))
    elif case == "label range":
        np.savez(src, x=x, y=y % 5)
    elif case == "count":
        np.savez(src, x=x, y=y[:99])
    elif case == "float labels":
        np.savez(src, x=x, y=y.astype(np.float64))
    else:
        src.write_bytes(b"garbage")
    with pytest.raises(SourceError) as err:
        arrays.build(tmp_path / "out", src=src, num_classes=3 if case == "label range" else None, progress=False)
    assert "bad.npz" in str(err.value) and problem in str(err.value)
    assert listing(tmp_path / "out") == []


def test_embedded_default_builds_through_the_registry(tmp_path):
    a = registry.get("mnist5k").build(tmp_path / "a", progress=False)
    m = load_verified(a["train"])
    check_contents(a["train"], m)
    assert m["num_samples"] == 4000 and set(m["class_counts"].values()) == {400}
    assert m["sources"][0]["path"] == "mnist_5k.csv.gz" and "class-stratified" in m["source_note"]
    assert load_verified(a["test"])["num_samples"] == 1000
    with pytest.raises(SourceError, match="takes no --src"):
        embedded.build(tmp_path / "c", src="/somewhere", progress=False)


def test_jpeg_option_round_trips_approximately_and_verifies(cifar5k, tmp_path):
    _, real = cifar5k
    x, y = real["x_test"][:64], real["y_test"][:64]
    raw = write_arrays(x, y, tmp_path / "raw.beton", dataset="t", split="test", num_classes=10, progress=False)
    jpg = write_arrays(x, y, tmp_path / "jpg.beton", dataset="t", split="test", num_classes=10, encoding="jpg",
                       jpeg_quality=95, progress=False)
    assert jpg["fields"]["image"] == {"type": "RGBImageField", "write_mode": "jpg", "jpeg_quality": 95}
    assert jpg["mean"] == raw["mean"]  # statistics of the raw pixels either way
    check_contents(tmp_path / "jpg.beton", load_verified(tmp_path / "jpg.beton"))
    got, labels = read_beton(tmp_path / "jpg.beton")
    assert labels["label"].tolist() == y.tolist()
    # Exactly what OpenCV's JPEG round trip at that quality gives (FFCV encodes with OpenCV).
    import cv2

    expected = [cv2.imdecode(cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1],
                             cv2.IMREAD_COLOR)[:, :, ::-1] for img in x]
    np.testing.assert_array_equal(got, np.stack(expected))
    assert 0 < np.abs(got.astype(int) - x).mean() < 5  # lossy, but close


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    mean, std = channel_stats(x, chunk=100)  # several chunks
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(axis=0), rtol=1e-9)


def test_writer_workers_one_is_byte_identical(tmp_path):
    """The property the package relies on; more workers race for pages (docs/betons.md)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 3000)
    digests = {write_arrays(x, y, tmp_path / f"{i}.beton", dataset="t", split="train", progress=False)["beton_sha256"]
               for i in range(3)}
    assert len(digests) == 1


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import ffcv.writer

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ffcv.writer.DatasetWriter, "from_indexed_dataset", boom)
    x = np.zeros((10, 4, 4), np.uint8)
    with pytest.raises(KeyboardInterrupt):
        write_arrays(x, np.zeros(10, int), tmp_path / "t.beton", dataset="t", split="train", progress=False)
    assert listing(tmp_path) == []


def test_ffcv_loader_reads_what_we_wrote(cifar5k, tmp_path):
    """The real consumer: FFCV's own Loader decodes the same pixels and labels."""
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption

    _, real = cifar5k
    x, y = real["x_test"][:40], real["y_test"][:40]
    write_arrays(x, y, tmp_path / "t.beton", dataset="t", split="test", num_classes=10, progress=False)
    loader = Loader(str(tmp_path / "t.beton"), batch_size=40, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [NDArrayDecoder()], "label": [IntDecoder()]})
    (images, labels), = list(loader)
    np.testing.assert_array_equal(np.asarray(images), x)
    np.testing.assert_array_equal(np.asarray(labels).ravel(), y)


# -- the `lmc beton` commands ------------------------------------------------------------------

def test_cli_build_verify_and_detect_corruption(cifar5k, tmp_path, capsys):
    from app.cli import main

    path, _ = cifar5k
    out = tmp_path / "out"
    assert main(["beton", "build", "npz", "--src", str(path), "--out", str(out), "--split", "test", "--quiet"]) == 0
    beton = out / "test.beton"
    assert main(["beton", "verify", str(beton)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
    data = bytearray(beton.read_bytes())
    data[len(data) // 2] ^= 0xFF
    beton.write_bytes(bytes(data))
    # Like every user error: one line on stderr, exit 2, nothing on stdout.
    assert main(["beton", "verify", str(beton)]) == 2
    out = capsys.readouterr()
    assert not out.out and len(out.err.splitlines()) == 1 and "sha256" in out.err
    paths.manifest_path(beton).unlink()
    assert main(["beton", "verify", str(beton)]) == 2
    out = capsys.readouterr()
    assert not out.out and len(out.err.splitlines()) == 1 and "manifest" in out.err


def test_verify_catches_a_manifest_from_another_build(cifar5k, tmp_path):
    _, real = cifar5k
    x, y = real["x_test"][:50], real["y_test"][:50]
    write_arrays(x, y, tmp_path / "a.beton", dataset="t", split="test", num_classes=10, progress=False)
    m = load_verified(tmp_path / "a.beton")
    m["class_counts"] = {str(k): 5 for k in range(10)}
    with pytest.raises(ManifestError, match="per-class label counts"):
        check_contents(tmp_path / "a.beton", m)
    m = dict(m, num_samples=49)
    with pytest.raises(ManifestError, match="holds 50 samples"):
        check_contents(tmp_path / "a.beton", m)


def test_cli_usage_errors(tmp_path, capsys):
    from app.cli import main

    assert main(["beton", "build", "npz", "--out", str(tmp_path)]) == 2
    assert main(["beton", "build", "mnist", "--name", "x", "--out", str(tmp_path)]) == 2
    assert main(["beton", "build", "cifar10", "--src", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "absent: no such file or folder" in err[2]
    assert listing(tmp_path / "o") == []


def test_large_raw_images_get_pages_that_fit(tmp_path):
    """1100x1100x3 (3.6 MB) is larger than FFCV's 2 MiB page: the writer picks 4 MiB pages."""
    x = np.random.default_rng(2).integers(0, 256, (2, 1100, 1100, 3), dtype=np.uint8)
    m = write_arrays(x, np.array([0, 1]), tmp_path / "big.beton", dataset="t", split="train", progress=False)
    assert m["writer"]["page_size"] == 1 << 22
    np.testing.assert_array_equal(read_beton(tmp_path / "big.beton")[0], x)


def test_a_dying_writer_worker_raises_instead_of_hanging(tmp_path, monkeypatch):
    """A worker that fails (here: a full disk while reading samples) must not leave the parent
    polling forever, nor a .beton behind."""
    import beton_builders.writer as w

    def full_disk(self, i):
        raise OSError("No space left on device")

    monkeypatch.setattr(w._Indexed, "__getitem__", full_disk)
    with pytest.raises(RuntimeError, match="worker exited with code 1"):
        write_arrays(np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), tmp_path / "t.beton", dataset="t",
                     split="train", progress=False)
    assert listing(tmp_path) == []
