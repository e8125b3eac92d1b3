"""`lmc reproduce gpt_lmc` (seed 002): the study end to end on a tiny corpus, its table and figure,
a rerun that trains nothing, and the paper scale's refusals before anything runs."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from lmc import paths

TINY = ("--set", "max_steps=40", "--set", "width=16", "--set", "depth=1", "--set", "heads=2", "--set", "batch_size=8")
ROWS = ["from scratch", "spawned at k = 1", "spawned at k = 5", "fine-tuned (pretrained on pydoc topics)"]
COLUMNS = [f"{m}, {s}" for m in ("loss barrier", "token-error barrier %", "endpoint loss") for s in ("test", "train")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_shakespeare(tmp_path, monkeypatch):
    """A data root whose tiny-shakespeare is the corpus's first 20,000 characters."""
    from beton_fixtures import need

    text = (need("tinyshakespeare") / "input.txt").read_text()[:20000]
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").write_text(text)
    monkeypatch.setenv("LMC_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path / "results"


def _reproduce(root, *argv) -> int:
    from app.cli import main

    return main(["reproduce", "gpt_lmc", "--results", str(root), *argv])


def _summary(root) -> dict:
    return json.loads((paths.sweep_dir("gpt_lmc", "quick", root) / "summary.json").read_text())


def test_the_quick_study_end_to_end_and_a_rerun_trains_nothing(tiny_shakespeare, capsys):
    root = tiny_shakespeare
    assert _reproduce(root, *TINY) == 0
    out = paths.sweep_dir("gpt_lmc", "quick", root)
    printed = capsys.readouterr().out
    assert "| from scratch" in printed and str(paths.figure_files(out / paths.GPT_LMC_FIGURE)[".png"]) in printed

    md = paths.table_files(out / paths.GPT_LMC_TABLE)[".md"].read_text()
    header = md.splitlines()[0]
    assert all(c in header for c in COLUMNS) and "LMC (token-error barrier < 2%)" in header
    tidy = pd.read_csv(paths.table_files(out / paths.GPT_LMC_TABLE)[".csv"])
    assert list(dict.fromkeys(tidy.row)) == ROWS
    assert set(tidy.measure) == {"loss_barrier", "error_barrier_pct", "endpoint_loss"}
    assert set(tidy.split) == {"test", "train"} and (tidy.n == 1).all() and tidy["mean"].map(math.isfinite).all()
    barriers = tidy[tidy.measure != "endpoint_loss"]
    assert (barriers["mean"] >= 0).all()
    # 40 steps of pretraining on pydoc topics, then 40 on Shakespeare: a lower test loss than 40 from scratch.
    loss = tidy[(tidy.measure == "endpoint_loss") & (tidy.split == "test")].set_index("row")["mean"]
    assert loss[ROWS[-1]] < loss[ROWS[0]] < math.log(65)
    for figure in paths.figure_files(out / paths.GPT_LMC_FIGURE).values():
        assert figure.stat().st_size > 0
    curves = pd.read_parquet(out / paths.GPT_LMC_CURVES)
    assert set(curves.row) == set(ROWS) and curves.groupby(["row", "split"]).alpha.nunique().eq(11).all()

    # The fine-tuned children start from the pretraining run, pinned by its final weights' content.
    plan = json.loads((out / paths.SWEEP_PLAN).read_text())["tasks"]
    fine = next(t for t in plan if t["cell"] == "finetuned")["config"]
    pretrain = paths.run_dir(fine["init_from"].removeprefix("run:"), root)
    from experiments.training.initial import _load_state, tensors_sha256

    assert (pretrain / paths.DONE).exists()
    assert fine["init_from_sha256"] == tensors_sha256(_load_state(pretrain / paths.FINAL))
    # One parent for both spawn steps, holding its state at each.
    spawn = next(t for t in plan if t["cell"] == "spawn_5")
    assert spawn["config"]["spawn_step"] == 5
    first = _summary(root)["invocations"][-1]
    assert first["runs_trained"] == 1 + 1 + 2 * len(ROWS)  # pretraining, parent, children

    finals = {p: p.stat().st_mtime_ns for p in paths.runs_dir(root).glob(f"*/{paths.FINAL}")}
    assert _reproduce(root, *TINY) == 0
    assert _summary(root)["invocations"][-1]["runs_trained"] == 0
    assert {p: p.stat().st_mtime_ns for p in paths.runs_dir(root).glob(f"*/{paths.FINAL}")} == finals
    assert pd.read_csv(paths.table_files(out / paths.GPT_LMC_TABLE)[".csv"]).equals(tidy)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _nothing_but_the_layout_stamp(root) -> bool:
    """`lmc reproduce` may stamp the results layout before a study runs; the study leaves nothing else."""
    return not root.exists() or sorted(p.name for p in root.iterdir()) == [paths.LAYOUT_FILE]


def test_the_paper_scale_without_a_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "results"
    assert _reproduce(root, "--scale", "paper") == 2
    assert "needs --checkpoint PATH" in _one_line_error(capsys)
    assert _nothing_but_the_layout_stamp(root)


def _need_bpe() -> None:
    if not paths.gpt2_bpe_file().is_file():
        pytest.skip(f"GPT-2's BPE file {paths.gpt2_bpe_file()} is absent (set LMC_DATA_ROOT to the shared datasets)")


def _hf_gpt2(folder, vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=8, n_layer=1, n_head=2, n_positions=128, vocab_size=vocab_size,
                        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_a_checkpoint_with_the_wrong_vocabulary_is_one_line(tmp_path, capsys):
    _need_bpe()
    root = tmp_path / "results"
    folder = _hf_gpt2(tmp_path / "gpt2_small_vocab", 100)
    capsys.readouterr()  # what saving the checkpoint printed
    assert _reproduce(root, "--scale", "paper", "--checkpoint", str(folder)) == 2
    err = _one_line_error(capsys)
    assert "vocabulary of 100 tokens" in err and "50257" in err
    assert _nothing_but_the_layout_stamp(root)


def test_the_paper_plan_follows_seed_002(tmp_path):
    from argparse import Namespace

    from app.studies import gpt_lmc

    _need_bpe()
    folder = _hf_gpt2(tmp_path / "gpt2", 50257)
    args = Namespace(scale="paper", seeds=1, intervals=False, set=[], checkpoint=str(folder), results=tmp_path / "r")
    plan = gpt_lmc.plan_for(args)
    scratch, finetune = plan.rows[0].config, plan.rows[-1].config
    assert [r.spawn_step for r in plan.rows] == [0, 250, 1250, 0]
    assert (scratch.width, scratch.depth, scratch.heads, scratch.block_size, scratch.batch_size) == (192, 6, 6, 64, 32)
    assert (scratch.max_steps, scratch.warmup_steps, scratch.micro_batches) == (10_000, 1000, 1)
    # GPT-2 fine-tuning: the checkpoint's shape, context capped by its positions, batch 8 as 2 x 4.
    assert (finetune.width, finetune.depth, finetune.heads, finetune.block_size) == (8, 1, 2, 128)
    assert (finetune.max_steps, finetune.warmup_steps, finetune.batch_size, finetune.micro_batches) == (300, 30, 8, 2)
    assert finetune.init_from == str(folder.resolve()) and len(finetune.init_from_sha256) == 64
    for cfg in (scratch, finetune):
        assert (cfg.optimizer, cfg.lr, cfg.min_lr, cfg.adam_beta1, cfg.adam_beta2, cfg.grad_clip, cfg.schedule) == \
            ("adamw", 6e-4, 6e-5, 0.9, 0.95, 1.0, "cosine")
    assert {s.name for s in plan.data} == {"shakespeare_gpt2_s64", "shakespeare_gpt2_s128"}
    assert all(dict(s.options)["tokenizer"] == "gpt2" for s in plan.data)
    assert not (tmp_path / "r").exists()  # planning writes nothing


def test_a_run_fine_tunes_from_a_hugging_face_gpt2_folder(tiny_shakespeare, tmp_path):
    """The paper scale's fine-tuned row: init_from names a Hugging Face folder (which, like a run
    directory, holds a config.json), pinned by its content and loaded into the first weights."""
    from beton_builders.prepare import DataSpec, ensure_dataset
    from experiments.config import TrainConfig
    from experiments.training import train
    from experiments.training.initial import pin
    from lmc.manifest import read_manifest

    root = tiny_shakespeare
    betons = ensure_dataset(DataSpec("tiny_char", "text", None, options=(("tokenizer", "char"), ("stride", 64))), root)
    vocab = read_manifest(betons["train"])["vocab_size"]
    folder = _hf_gpt2(tmp_path / "gpt2", vocab)
    cfg = pin(TrainConfig(dataset="tiny_char", model="gpt", width=8, depth=1, heads=2, block_size=16, augment="offset",
                          optimizer="adamw", lr=1e-3, batch_size=8, max_steps=2, init_from=str(folder)), root)
    from experiments.models.hf_vit import checkpoint_sha256

    assert cfg.init_from_sha256 == checkpoint_sha256(folder)
    run = train(cfg, root, progress=False)
    report = json.loads((run / paths.PROVENANCE).read_text())["init_from"]
    assert report["source"] == str(folder) and report["sha256"] == cfg.init_from_sha256


@pytest.mark.parametrize("argv, message", [
    (("--checkpoint", "/nowhere"), "--checkpoint applies to gpt_lmc's paper scale"),
    (("--set", "dataset=mnist5k"), "chooses each row's dataset itself"),
    (("--set", "no_such_key=1"), "unknown config key 'no_such_key'"),
    (("--seeds", "1", "--intervals"), "needs at least 2 seed pairs"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert _reproduce(tmp_path / "results", *argv) == 2
    assert message in _one_line_error(capsys)
    assert not paths.sweep_dir("gpt_lmc", "quick", tmp_path / "results").exists()


def _barrier_rows(values: dict[str, list[float]]) -> pd.DataFrame:
    """Barrier rows of both splits for {row: [token-error barrier % of each pair]}."""
    return pd.DataFrame([{"row": row, "pair": i, "split": split, "status": "ok", "error_barrier_pct": v,
                          "loss_barrier": v / 50, "endpoint_loss": 2.0 + i / 10}
                         for row, vs in values.items() for i, v in enumerate(vs) for split in ("test", "train")])


def test_the_table_decides_lmc_on_the_interval_with_several_pairs():
    from analysis.gpt_lmc import table

    rows = {"from scratch": [5.0, 6.0, 7.0], "spawned": [0.5, 4.0, 1.0], "fine-tuned": [0.1, 0.2, 0.3]}
    t = table(_barrier_rows(rows), list(rows), intervals=True)
    wide = t.wide.set_index("")
    assert list(wide["LMC (token-error barrier < 2%)"]) == ["no", "undecided", "yes"]
    assert wide.loc["fine-tuned", "token-error barrier %, test"] == "0.20 ± 0.10 [0.10, 0.30]"
    assert (wide.pairs == 3).all()
    one = table(_barrier_rows({"from scratch": [5.0], "fine-tuned": [0.1]}), ["from scratch", "fine-tuned"])
    assert list(one.wide["LMC (token-error barrier < 2%)"]) == ["no", "yes"]
    assert one.wide.set_index("").loc["fine-tuned", "token-error barrier %, test"] == "0.10"
