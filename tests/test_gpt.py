"""The GPT family, loading a local Hugging Face GPT-2, true gradient accumulation and LM evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiments.language import accumulate, evaluate_lm, lm_loss, micro_batches
from experiments.models.gpt import (GPT, PRESETS, CheckpointError, GPTConfig, hf_gpt2_config, load_hf_gpt2,
                                    parameter_count, preset)
from lmc.errors import UserError

TINY = GPTConfig(n_embd=32, n_layer=2, n_head=4, block_size=16, vocab_size=65)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds synchronisation (and on a busy 2-core
    machine, waiting for it made the tiny pair 40x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _model(cfg=TINY, seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg)


@pytest.fixture(scope="module")
def shakespeare_tokens():
    """The first 20,000 characters of tiny-shakespeare as char ids (its 65-symbol vocabulary)."""
    from beton_fixtures import need

    raw = need("tinyshakespeare/input.txt").read_text(encoding="utf-8")
    vocab = {c: i for i, c in enumerate(sorted(set(raw)))}
    return torch.tensor([vocab[c] for c in raw[:20_000]], dtype=torch.int64)


def _batch(tokens, n, t, seed=0):
    starts = torch.from_numpy(np.random.default_rng(seed).integers(0, len(tokens) - t - 1, n))
    w = torch.stack([tokens[s:s + t + 1] for s in starts.tolist()])
    return w[:, :-1], w[:, 1:]


# -- the model -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts_follow_the_closed_form(name):
    for cfg in (preset(name), preset(name, bias=False)):
        with torch.device("meta"):
            model = GPT(cfg)
        assert sum(p.numel() for p in model.parameters()) == parameter_count(cfg)
    if name == "GPT2":
        assert parameter_count(preset(name)) == 124_439_808  # GPT-2 small


def test_presets_match_seed_002_and_bad_configs_are_refused():
    shapes = {n: (c.n_embd, c.n_layer, c.n_head, c.block_size) for n, c in PRESETS.items()}
    assert shapes == {"TinyGPT": (64, 4, 4, 8), "ToyGPT": (32, 4, 4, 8), "CompactGPT": (192, 6, 6, 64),
                      "MinGPT": (384, 6, 6, 256), "GPT2": (768, 12, 12, 1024)}
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="known presets"):
        preset("BigGPT")
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        preset("TinyGPT", width=3)


def test_no_buffers_tied_output_and_nanogpt_init():
    cfg = GPTConfig(n_embd=256, n_layer=4, n_head=4, block_size=16, vocab_size=500)
    model = _model(cfg)
    assert list(model.buffers()) == [] and "lm_head.weight" not in model.state_dict()
    sd = model.state_dict()
    assert abs(sd["transformer.wte.weight"].std().item() - 0.02) < 0.001
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std().item() - 0.02) < 0.001
    for key in ("transformer.h.1.attn.c_proj.weight", "transformer.h.3.mlp.c_proj.weight"):
        assert abs(sd[key].std().item() - 0.02 / math.sqrt(8)) < 0.0005
    assert all(sd[k].abs().sum() == 0 for k in sd if k.endswith("c_fc.bias"))
    # The output layer is the embedding: its gradient reaches wte through both uses.
    x = torch.randint(0, 500, (2, 16))
    model(x).sum().backward()
    assert model.transformer.wte.weight.grad[x.unique()].abs().sum() > 0
    assert torch.equal(_model(cfg).state_dict()["transformer.wpe.weight"], sd["transformer.wpe.weight"])


def test_attention_is_causal_and_context_is_bounded():
    model = _model().eval()
    x = torch.randint(0, 65, (1, 16))
    y = x.clone()
    y[0, 9] = (x[0, 9] + 1) % 65
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (1, 16, 65)
    torch.testing.assert_close(a[0, :9], b[0, :9], rtol=0, atol=0)
    assert not torch.allclose(a[0, 9:], b[0, 9:])
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 17, dtype=torch.int64))


# -- a local Hugging Face GPT-2 checkpoint -----------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    hf = GPT2LMHeadModel(GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=32, vocab_size=101)).eval()
    folder = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(folder)
    x = torch.randint(0, 101, (3, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = hf(x).logits
    return folder, x, logits


def test_hf_checkpoint_gives_equal_logits(hf_folder):
    folder, x, hf_logits = hf_folder
    cfg = hf_gpt2_config(folder)
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.block_size, cfg.vocab_size) == (48, 2, 4, 32, 101)
    model = GPT(cfg)
    model.load_state_dict(load_hf_gpt2(folder, cfg), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), hf_logits, rtol=1e-4, atol=1e-5)
    # A shorter context keeps the first rows of the position embedding (fine-tuning at block 8).
    short = GPTConfig(**{**cfg.to_dict(), "block_size": 8})
    model = GPT(short)
    model.load_state_dict(load_hf_gpt2(folder, short), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x[:, :8]), hf_logits[:, :8], rtol=1e-4, atol=1e-5)


def test_hf_checkpoint_that_does_not_fit_is_one_line(hf_folder, tmp_path):
    folder, _, _ = hf_folder
    cfg = hf_gpt2_config(folder)
    with pytest.raises(CheckpointError, match="vocabulary of 101 tokens, the model and data have 65") as err:
        load_hf_gpt2(folder, GPTConfig(**{**cfg.to_dict(), "vocab_size": 65}))
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="n_layer 2 vs 3"):
        load_hf_gpt2(folder, GPTConfig(**{**cfg.to_dict(), "n_layer": 3}))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_gpt2(tmp_path / "absent")


# -- gradient accumulation and evaluation --------------------------------------------------------

def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_accumulated_gradient_equals_the_full_batch_gradient(shakespeare_tokens):
    model = _model()
    x, y = _batch(shakespeare_tokens, 10, 16)
    full = lm_loss(model, x, y)
    full.backward()
    reference = _grads(model)

    model.zero_grad()
    step_loss = accumulate(model, micro_batches(x, y, 4))  # sizes 3, 3, 2, 2
    for got, want in zip(_grads(model), reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(step_loss, full.detach(), rtol=1e-5, atol=1e-6)

    # Seed 002's accumulation (backward on the same micro-batch each time) is not the same.
    model.zero_grad()
    first = micro_batches(x, y, 4)[0]
    accumulate(model, [first] * 4)
    assert max((g - r).abs().max().item() for g, r in zip(_grads(model), reference)) > 1e-4
    with pytest.raises(ValueError, match="1..10"):
        micro_batches(x, y, 11)


def test_evaluate_lm_is_the_mean_over_every_token(shakespeare_tokens):
    from pipelines.text import eval_windows

    model = _model().train()
    windows = eval_windows(shakespeare_tokens.numpy(), 16)
    a = evaluate_lm(model, windows, batch_size=7)
    b = evaluate_lm(model, windows, batch_size=len(windows))
    assert model.training  # mode restored
    assert a["tokens"] == len(windows) * 16 == b["tokens"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["error"] == b["error"]
    assert a["perplexity"] == pytest.approx(math.exp(a["loss"]))
    with torch.no_grad():
        logits = model.eval()(windows[:, :-1])
    ref = F.cross_entropy(logits.reshape(-1, 65), windows[:, 1:].reshape(-1)).item()
    assert a["loss"] == pytest.approx(ref, rel=1e-5)
    assert a["error"] == pytest.approx(1 - (logits.argmax(-1) == windows[:, 1:]).float().mean().item())
    assert abs(a["loss"] - math.log(65)) < 0.1  # N(0, 0.02) weights: nearly uniform predictions


def test_a_tiny_pair_trains_and_interpolates(shakespeare_tokens):
    """Two children of one init on distinct batches: both learn; the midpoint is still a model."""
    from pipelines.text import eval_windows

    train, held_out = shakespeare_tokens[:18_000], eval_windows(shakespeare_tokens[18_000:].numpy(), 16)
    init = _model(seed=5).state_dict()
    children = []
    for data_seed in (1, 2):
        model = GPT(TINY)
        model.load_state_dict(init)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
        for step in range(40):
            opt.zero_grad()
            accumulate(model, micro_batches(*_batch(train, 16, 16, seed=1000 * data_seed + step), 2))
            opt.step()
        children.append(model.state_dict())
    losses = []
    for alpha in (0.0, 0.5, 1.0):
        model = GPT(TINY)
        model.load_state_dict({k: (1 - alpha) * children[0][k] + alpha * children[1][k] for k in init})
        losses.append(evaluate_lm(model, held_out)["loss"])
    assert max(losses[0], losses[2]) < math.log(65) - 0.8  # both endpoints learned
    assert not torch.equal(children[0]["transformer.wte.weight"], children[1]["transformer.wte.weight"])
