"""Text -> token .betons (builder, manifest, bad input) and the seeded window loader's contract,
on the real tiny-shakespeare corpus and GPT-2's real BPE file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from beton_builders import text
from beton_builders.sources import SourceError
from beton_fixtures import listing, need
from lmc import paths, seeds
from lmc.config import ConfigError
from lmc.errors import UserError
from lmc.manifest import ManifestError, check_contents, load_verified, read_manifest, window_starts
from pipelines import twin

SHAKESPEARE = "tinyshakespeare/input.txt"
BPE = paths.data_root().parent / "assets" / "gpt2.tiktoken"
STRIDE = 256
EPOCHS = 2


@pytest.fixture(scope="module")
def corpus():
    return need(SHAKESPEARE)


@pytest.fixture(scope="module")
def char_betons(corpus, tmp_path_factory):
    return text.build(tmp_path_factory.mktemp("shakespeare_char"), src=corpus, stride=STRIDE, progress=False)


@pytest.fixture(scope="module")
def test_stream(char_betons):
    from pipelines import load_tokens

    return load_tokens(char_betons["test"])


# -- the builder -----------------------------------------------------------------------------

def test_char_build_splits_like_nanogpt_and_stores_the_whole_stream(corpus, char_betons):
    from pipelines import load_tokens

    raw = corpus.read_text(encoding="utf-8")
    cut = int(0.9 * len(raw))
    vocabulary = "".join(sorted(set(raw)))
    assert len(vocabulary) == 65
    for split, part in (("train", raw[:cut]), ("test", raw[cut:])):
        m = load_verified(char_betons[split])
        check_contents(char_betons[split], m)
        assert m["kind"] == "tokens" and m["vocab_size"] == 65 and m["tokenizer"]["vocabulary"] == vocabulary
        assert m["sources"][0]["sha256"].startswith("86c4e6aa") and m["num_tokens"] == len(part)
        assert m["num_samples"] == len(window_starts(len(part), STRIDE))
        decoded = "".join(vocabulary[i] for i in load_tokens(char_betons[split]))
        assert decoded == part
    assert read_manifest(char_betons["train"])["token_counts"] == {"train": 1_003_854, "test": 111_540}


def test_rebuilds_are_byte_identical(corpus, char_betons, tmp_path):
    again = text.build(tmp_path / "again", src=corpus, stride=STRIDE, progress=False)
    for split in ("train", "test"):
        assert again[split].read_bytes() == char_betons[split].read_bytes()
    other = text.build(tmp_path / "other", src=corpus, stride=STRIDE // 2, splits=("test",), progress=False)
    assert other["test"].read_bytes() != char_betons["test"].read_bytes()


def test_gpt2_bpe_from_the_local_file_matches_nanogpt(corpus, tmp_path):
    if not BPE.exists():
        pytest.skip(f"GPT-2's BPE file {BPE} is absent")
    enc, record = text.gpt2_encoding(BPE)
    assert enc.encode_ordinary("Hello world") == [15496, 995] and record["sha256"].startswith("306cd27f")
    built = text.build(tmp_path, src=corpus, tokenizer="gpt2", bpe=BPE, progress=False)
    m = load_verified(built["test"])
    check_contents(built["test"], m)
    # nanoGPT's data/shakespeare/prepare.py reports these counts.
    assert m["token_counts"] == {"train": 301_966, "test": 36_059} and m["vocab_size"] == 50257
    from pipelines import load_tokens

    raw = corpus.read_text(encoding="utf-8")
    assert enc.decode(load_tokens(built["test"]).tolist()) == raw[int(0.9 * len(raw)):]


def test_vocab_from_shares_ids_and_counts_dropped_characters(char_betons, results_root, tmp_path):
    built = text.build(tmp_path, src="corpus:pydoc_topics", vocab_from=char_betons["train"], stride=STRIDE,
                       progress=False)
    m = read_manifest(built["train"])
    assert m["tokenizer"]["vocabulary"] == read_manifest(char_betons["train"])["tokenizer"]["vocabulary"]
    corpus = paths.corpus_path("pydoc_topics", results_root).read_text(encoding="utf-8")
    unknown = set(m["tokenizer"]["dropped_symbols"])
    assert unknown and "_" in unknown and not unknown & set(m["tokenizer"]["vocabulary"])
    assert sum(m["tokenizer"]["dropped_chars"].values()) == sum(c in unknown for c in corpus)
    assert m["sources"][0]["path"] == "pydoc_topics.txt" and "Python" in m["source_note"]


@pytest.mark.parametrize("case", ["empty", "latin1", "bpe_missing", "bpe_absent", "tokenizer", "too_short"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    from app.cli import main

    src = tmp_path / "corpus.txt"
    src.write_bytes({"empty": b" \n", "latin1": "Fran\u00e7ais".encode("latin1") * 100}.get(case, b"to be or not " * 50))
    argv = ["beton", "build", "text", "--src", str(src), "--out", str(tmp_path / "out"), "--quiet"]
    argv += {"bpe_missing": ["--tokenizer", "gpt2"], "bpe_absent": ["--tokenizer", "gpt2", "--bpe", str(tmp_path / "x")],
             "tokenizer": ["--tokenizer", "bpe"], "too_short": ["--stride", "64"]}.get(case, [])
    try:
        assert main(argv) == 2
    except SystemExit as exc:  # argparse refuses an unknown --tokenizer itself
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert {"empty": "empty", "latin1": "not UTF-8", "bpe_missing": "needs --bpe", "bpe_absent": "no such BPE",
            "tokenizer": "invalid choice", "too_short": "fewer than one stored window"}[case] in err[0]
    assert listing(tmp_path / "out") == []
    with pytest.raises(SourceError, match="unknown tokenizer"):
        text.tokenize("abc", "bpe")


def test_kinds_keep_image_and_token_betons_apart(char_betons, tmp_path):
    from beton_builders.writer import write_arrays
    from pipelines import make_loader, make_text_loader

    with pytest.raises(ManifestError, match="token .beton"):
        make_loader(char_betons["test"], batch_size=8, order_seed=0)
    m = json.loads(paths.manifest_path(char_betons["test"]).read_text())
    assert "image_shape" not in m  # token manifests validate without the image keys
    bad = tmp_path / "bad.beton"
    bad.write_bytes(char_betons["test"].read_bytes())
    paths.manifest_path(bad).write_text(json.dumps(dict(m, kind="audio")))
    with pytest.raises(ManifestError, match="unknown kind 'audio'"):
        load_verified(bad)
    images = tmp_path / "images.beton"
    write_arrays(np.zeros((4, 8, 8), np.uint8), np.arange(4), images, dataset="t", split="train", progress=False)
    with pytest.raises(ManifestError, match="an image .beton"):
        make_text_loader(images, batch_size=8, block_size=8, order_seed=0)


def test_verify_catches_a_token_manifest_from_another_build(char_betons):
    m = load_verified(char_betons["test"])
    with pytest.raises(ManifestError, match="differ from those its manifest"):
        check_contents(char_betons["test"], dict(m, tokens_sha256="0" * 64))


# -- the seeded window loader ----------------------------------------------------------------

def _epochs(beton, **spec):
    from pipelines import make_text_loader

    spec = {"batch_size": 64, "block_size": 32, **spec}
    loader = make_text_loader(beton, **spec)
    out = {}
    for e in range(EPOCHS):
        xs, ys, idx = zip(*[(x.numpy(), y.numpy(), i.numpy()) for x, y, i in loader.iter_epoch(e)])
        out[e] = (np.concatenate(xs), np.concatenate(ys), np.concatenate(idx))
    return loader, out


@pytest.fixture(scope="module")
def runs(char_betons):
    beton = char_betons["test"]
    return {"a": _epochs(beton, order_seed=1, aug_seed=2),
            "a_again": _epochs(beton, order_seed=1, aug_seed=2),
            "order_changed": _epochs(beton, order_seed=3, aug_seed=2),
            "aug_changed": _epochs(beton, order_seed=1, aug_seed=7),
            "batch_and_threads": _epochs(beton, order_seed=1, aug_seed=2, batch_size=37, workers=1)}


def _by_index(windows, indices):
    return windows[np.argsort(indices, kind="stable")]


def test_same_seeds_give_identical_batches(runs):
    loader, a = runs["a"]
    _, b = runs["a_again"]
    for e in range(EPOCHS):
        for u, v in zip(a[e], b[e]):
            np.testing.assert_array_equal(u, v)
    again = [x.numpy() for x, _, _ in loader.iter_epoch(1)]
    np.testing.assert_array_equal(np.concatenate(again), a[1][0])


def test_windows_are_the_stream_at_the_hashed_offset(runs, test_stream):
    loader, a = runs["a"]
    key = seeds.aug_key(2)
    for e in range(EPOCHS):
        x, y, idx = a[e]
        assert sorted(idx) == list(range(loader.num_samples))  # every stored sample once per epoch
        starts = window_starts(len(test_stream), STRIDE)
        for row in range(0, len(idx), 17):
            i = int(idx[row])
            # the pure-Python twin of pipelines/kernel.py's hash, salt 5
            offset = twin.randint(twin.sample_state(key, 5, e, i), 0, STRIDE)
            begin = starts[i] + offset
            np.testing.assert_array_equal(x[row], test_stream[begin:begin + 32])
            np.testing.assert_array_equal(y[row], test_stream[begin + 1:begin + 33])


def test_order_seed_changes_order_only(runs):
    _, a = runs["a"]
    _, o = runs["order_changed"]
    for e in range(EPOCHS):
        assert not np.array_equal(a[e][2], o[e][2])
        for k in (0, 1):
            np.testing.assert_array_equal(_by_index(a[e][k], a[e][2]), _by_index(o[e][k], o[e][2]))


def test_aug_seed_changes_offsets_only(runs):
    _, a = runs["a"]
    _, g = runs["aug_changed"]
    for e in range(EPOCHS):
        np.testing.assert_array_equal(a[e][2], g[e][2])
        same = np.mean([np.array_equal(u, v) for u, v in zip(a[e][0], g[e][0])])
        assert same < 0.05  # equal offsets by chance: 1 / 256
    x0, x1 = _by_index(a[0][0], a[0][2]), _by_index(a[1][0], a[1][2])
    assert np.mean([np.array_equal(u, v) for u, v in zip(x0, x1)]) < 0.05  # epochs differ


def test_offsets_ignore_batch_size_threads_and_a_resumed_start(runs, char_betons):
    from pipelines import make_text_loader

    _, a = runs["a"]
    _, b = runs["batch_and_threads"]
    for e in range(EPOCHS):
        for u, v in zip(a[e], b[e]):
            np.testing.assert_array_equal(u, v)
    resumed = make_text_loader(char_betons["test"], batch_size=64, block_size=32, order_seed=1, aug_seed=2,
                               start_epoch=1)
    first = np.concatenate([x.numpy() for x, _, _ in resumed])  # __iter__ starts at epoch 1
    np.testing.assert_array_equal(first, a[1][0])


def test_no_offset_and_bad_block_sizes(char_betons, test_stream):
    from pipelines import make_text_loader

    loader = make_text_loader(char_betons["test"], batch_size=500, block_size=STRIDE, order_seed=0,
                              random_offset=False)
    x, y, idx = next(iter(loader.iter_epoch(0)))
    starts = window_starts(len(test_stream), STRIDE)
    i = int(idx[0])
    np.testing.assert_array_equal(x[0].numpy(), test_stream[starts[i]:starts[i] + STRIDE])
    with pytest.raises(ConfigError, match="rebuild it with --stride 257"):
        make_text_loader(char_betons["test"], batch_size=8, block_size=STRIDE + 1, order_seed=0)


def test_eval_windows_cover_the_split_in_order(char_betons, test_stream):
    from pipelines import eval_windows

    w = eval_windows(char_betons["test"], 64).numpy()
    count = (len(test_stream) - 1) // 64
    assert w.shape == (count, 65)
    np.testing.assert_array_equal(w[:, :-1].reshape(-1), test_stream[:count * 64])
    np.testing.assert_array_equal(w[:, 1:].reshape(-1), test_stream[1:count * 64 + 1])
    subset = eval_windows(test_stream, 64, max_windows=10).numpy()
    assert len(subset) == 10 and (subset[0] == w[0]).all() and all((row == w).all(1).any() for row in subset)
    with pytest.raises(ConfigError, match="longer than the split"):
        eval_windows(test_stream[:50], 64)


def test_digest_of_a_token_beton_and_its_cli(char_betons, capsys):
    from app.cli import main
    from pipelines import loader_digest

    args = dict(order_seed=4, aug_seed=5, epochs=2, block_size=16)
    here = loader_digest(char_betons["test"], batch_size=50, **args)
    assert loader_digest(char_betons["test"], batch_size=7, workers=1, **args) == here
    other = loader_digest(char_betons["test"], batch_size=50, **{**args, "order_seed": 6, "epochs": 1})[0]
    assert other["by_index_sha256"] == here[0]["by_index_sha256"] and other["order_sha256"] != here[0]["order_sha256"]
    assert main(["loader", "digest", "--beton", str(char_betons["test"]), "--order-seed", "4", "--aug-seed", "5",
                 "--epochs", "2", "--batch-size", "64", "--block-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out) == here
    assert main(["loader", "digest", "--beton", str(char_betons["test"]), "--order-seed", "4", "--aug-seed", "5",
                 "--epochs", "1", "--batch-size", "64"]) == 2
    assert "--block-size" in capsys.readouterr().err


def test_prepare_builds_text_datasets_for_a_grid(corpus, tmp_path):
    """How a grid asks for the quick scale's data: Shakespeare, then pydoc in Shakespeare's ids."""
    from beton_builders.prepare import DataSpec, data_summary, ensure_dataset

    shakespeare = DataSpec("shakespeare_char", "text", src=str(corpus), options=(("stride", STRIDE),))
    pydoc = DataSpec("pydoc_char", "text", src="corpus:pydoc_topics",
                     options=(("stride", STRIDE), ("vocab_from", "shakespeare_char")))
    built = ensure_dataset(shakespeare, tmp_path)
    again = ensure_dataset(pydoc, tmp_path)
    assert read_manifest(again["train"])["tokenizer"]["vocabulary_from"].startswith("shakespeare_char/train")
    assert paths.corpus_path("pydoc_topics", tmp_path).exists()
    summary = data_summary("shakespeare_char", tmp_path)
    assert summary["test_tokens"] == 111_540 and summary["vocab_size"] == 65
    assert ensure_dataset(shakespeare, tmp_path) == built  # built once
    with pytest.raises(UserError, match="text builder only"):
        ensure_dataset(DataSpec("x", "mnist", options=(("stride", 1),)), tmp_path)
