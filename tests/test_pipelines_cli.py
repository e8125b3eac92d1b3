"""Digests across processes, the `lmc loader` commands, JPEG .betons and broken .betons."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lmc.manifest import ManifestError
from lmc import paths
from lmc.config import save_json
from lmc.io import sha256_file
from pipelines import load_split, loader_digest, make_loader
from pipelines_fixtures import cifar_train, mnist_train

DIGEST_ARGS = dict(order_seed=11, aug_seed=12, augment="translate2", epochs=3)


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    return mnist_train(tmp_path_factory)


def _run_cli(argv):
    """Our `register` under a bare parser: the test does not depend on the other stages' CLIs."""
    from app.cli import Parser
    from pipelines import cli

    parser = Parser(prog="lmc")
    cli.register(parser.add_subparsers(dest="command", parser_class=Parser))
    args = parser.parse_args(argv)
    return args.func(args)


def test_digest_is_identical_across_processes_batch_sizes_and_workers(mnist, capsys):
    here = loader_digest(mnist, batch_size=128, **DIGEST_ARGS)
    code = ("import json, sys; from pipelines import loader_digest; "
            f"print(json.dumps(loader_digest(sys.argv[1], batch_size=128, **{DIGEST_ARGS!r})))")
    out = subprocess.run([sys.executable, "-c", code, str(mnist)], capture_output=True, text=True,
                         check=True, cwd=paths.REPO_ROOT, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
    assert [d["epoch"] for d in here] == [0, 1, 2]
    assert len({d["order_sha256"] for d in here}) == 3 and len({d["by_index_sha256"] for d in here}) == 3

    assert _run_cli(["loader", "digest", "--beton", str(mnist), "--order-seed", "11", "--aug-seed", "12",
                     "--epochs", "3", "--batch-size", "500", "--workers", "1", "--augment", "translate2"]) == 0
    assert json.loads(capsys.readouterr().out) == here  # batch size and workers do not enter

    other_order = loader_digest(mnist, batch_size=128, **{**DIGEST_ARGS, "order_seed": 13, "epochs": 1})[0]
    assert other_order["by_index_sha256"] == here[0]["by_index_sha256"]
    assert other_order["order_sha256"] != here[0]["order_sha256"]


def test_cli_refuses_bad_input_with_a_usage_error(mnist, tmp_path):
    from lmc.errors import UserError

    with pytest.raises(UserError, match="order_seed"):
        _run_cli(["loader", "digest", "--beton", str(mnist), "--order-seed", "-1", "--aug-seed", "0",
                  "--epochs", "1", "--batch-size", "10"])
    with pytest.raises(UserError, match="no such .beton"):
        _run_cli(["loader", "digest", "--beton", str(tmp_path / "missing.beton"), "--order-seed", "1",
                  "--aug-seed", "0", "--epochs", "1", "--batch-size", "10"])
    with pytest.raises(UserError, match="ORDER,AUG"):
        _run_cli(["loader", "show", "--beton", str(mnist), "--out", str(tmp_path / "g.png"), "--seeds", "43"])


def test_show_renders_figure_4(tmp_path_factory, tmp_path, capsys):
    beton = cifar_train(tmp_path_factory, n=600)
    out = tmp_path / "grid.png"
    assert _run_cli(["loader", "show", "--beton", str(beton), "--out", str(out), "--inits", "2",
                     "--images", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] == {"43,43": True, "118,118": True}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jpeg_betons_load_through_ffcvs_decoder(tmp_path):
    from beton_builders.writer import write_arrays

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    beton = tmp_path / "jpg.beton"
    write_arrays(x, rng.integers(0, 10, 40), beton, dataset="toy", split="train", num_classes=10, encoding="jpg")
    images, labels = load_split(beton)
    assert images.shape == (40, 3, 32, 32) and labels.shape == (40,)
    batch = next(make_loader(beton, batch_size=16, order_seed=1, augment="translate_flip").iter_epoch(0))
    assert batch[0].shape == (16, 3, 32, 32)


def _kinds():
    """FFCV field and a value generator, per short name."""
    from ffcv.fields import FloatField, IntField, NDArrayField

    shape = (28, 28, 1)
    return {"u8": (NDArrayField(np.dtype("uint8"), shape), lambda r: r.integers(0, 256, shape, dtype=np.uint8)),
            "f32": (NDArrayField(np.dtype("float32"), shape), lambda r: r.random(shape, dtype=np.float32)),
            "int": (IntField(), lambda r: int(r.integers(10))),
            "float": (FloatField(), lambda r: float(r.random()))}


def _forge(tmp_path, mnist, fields: dict[str, str]):
    """A .beton with the given fields and a manifest that verifies, to reach the field checks."""
    from lmc.ffcv_compat import import_ffcv

    import_ffcv()
    from ffcv.writer import DatasetWriter

    kinds, rng = _kinds(), np.random.default_rng(0)
    rows = [tuple(kinds[kind][1](rng) for kind in fields.values()) for _ in range(8)]
    beton = tmp_path / "forged.beton"
    writer = DatasetWriter(str(beton), {name: kinds[kind][0] for name, kind in fields.items()}, num_workers=1)
    writer.from_indexed_dataset(rows)
    manifest = json.loads(paths.manifest_path(mnist).read_text())
    manifest.update(num_samples=8, beton_sha256=sha256_file(beton), beton_bytes=beton.stat().st_size)
    save_json(manifest, paths.manifest_path(beton))
    return beton


@pytest.mark.parametrize("fields, message", [
    ({"pixels": "u8", "label": "int"}, "expected fields 'image' and 'label'"),
    ({"image": "f32", "label": "int"}, "float32"),
    ({"image": "u8", "label": "float"}, "FloatField"),
])
def test_betons_without_the_expected_fields_are_refused(tmp_path, mnist, fields, message):
    beton = _forge(tmp_path, mnist, fields)
    with pytest.raises(ManifestError, match=message):
        make_loader(beton, batch_size=4, order_seed=0)


def test_missing_or_corrupted_beton_is_refused(tmp_path, mnist):
    with pytest.raises(ManifestError, match="no such .beton"):
        make_loader(tmp_path / "nothing.beton", batch_size=4, order_seed=0)
    (tmp_path / "x.beton").write_bytes(b"not a beton")
    with pytest.raises(ManifestError, match="manifest"):
        make_loader(tmp_path / "x.beton", batch_size=4, order_seed=0)


def test_parser_help_builds_without_torch():
    code = ("import sys, argparse; from pipelines import cli; p = argparse.ArgumentParser(); "
            "cli.register(p.add_subparsers()); print('torch' in sys.modules, 'ffcv' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=paths.REPO_ROOT)
    assert out.stdout.split() == ["False", "False"]

