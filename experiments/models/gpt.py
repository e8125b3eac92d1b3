"""GPT: a nanoGPT-style decoder-only transformer (seed 002's model family).

    model = GPT(preset("TinyGPT"))          # 64 wide, 4 layers, 4 heads, context 8, 65 symbols
    logits = model(idx)                     # idx (B, T) int64 -> (B, T, vocab_size)

Pre-LayerNorm blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, causal multi-head
self-attention, a 4x MLP with GPT-2's tanh-approximated GELU, a final LayerNorm, and the output
layer tied to the token embedding (``logits = x @ wte.weightᵀ``, one tensor, so a state_dict
holds it once and a weighted average of two state_dicts stays tied). Initialisation as nanoGPT:
every Linear and Embedding weight ~ N(0, 0.02), biases 0, and the two residual projections of
each block (``attn.c_proj``, ``mlp.c_proj``) ~ N(0, 0.02 / sqrt(2 * n_layer)). No dropout by
default; no buffers (the causal mask is built on the fly). Attention is written out
(softmax(q kᵀ / sqrt(d) + mask) v) rather than ``scaled_dot_product_attention``: deterministic
under ``torch.use_deterministic_algorithms`` on every backend, like the ViT-like model.

Parameter names follow GPT-2's (``transformer.h.0.attn.c_attn.weight`` ...), so a local Hugging
Face checkpoint maps key for key (:func:`load_hf_gpt2`; its Conv1D weights are (in, out) and are
transposed to Linear's (out, in)). Count (C = n_embd, L = n_layer, V = vocab, T = block, b = 1
with biases): ``V*C + T*C + L*(12*C*C + (2 + 11*b)*C) + (1 + b)*C`` (:func:`parameter_count`);
GPT2 gives 124,439,808, GPT-2 small's published count.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmc.errors import UserError

from ._checks import positive_int

INIT_STD = 0.02


@dataclass(frozen=True)
class GPTConfig:
    n_embd: int = 64
    n_layer: int = 4
    n_head: int = 4
    block_size: int = 8  # the context: longest input sequence, rows of the position embedding
    vocab_size: int = 65
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them)
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("n_embd", "n_layer", "n_head", "block_size"):
            positive_int(getattr(self, name), name)
        positive_int(self.vocab_size, "vocab_size", minimum=2)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# Seed 002's config/GPTconfig.py: n_embd / n_layer / n_head / block_size; TinyGPT is char-level
# (tiny-shakespeare's 65 symbols), the others use GPT-2's 50,257 BPE tokens.
PRESETS: dict[str, GPTConfig] = {
    "TinyGPT": GPTConfig(64, 4, 4, 8, 65),
    "ToyGPT": GPTConfig(32, 4, 4, 8, 50257),
    "CompactGPT": GPTConfig(192, 6, 6, 64, 50257),
    "MinGPT": GPTConfig(384, 6, 6, 256, 50257),
    "GPT2": GPTConfig(768, 12, 12, 1024, 50257),
}
# Seed 002's batch size per preset (sequences per optimiser step).
PRESET_BATCH_SIZE = {"TinyGPT": 32, "ToyGPT": 32, "CompactGPT": 32, "MinGPT": 32, "GPT2": 8}


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration, optionally with fields replaced (e.g. ``vocab_size`` of the data)."""
    if name not in PRESETS:
        raise ValueError(f"unknown GPT preset {name!r}; known presets: {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(GPTConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown GPTConfig field(s) {unknown}; fields: {', '.join(GPTConfig.__dataclass_fields__)}")
    return replace(PRESETS[name], **overrides)


def parameter_count(cfg: GPTConfig) -> int:
    """The closed form of the module docstring (the tied output layer adds nothing)."""
    c, b = cfg.n_embd, int(cfg.bias)
    per_layer = 12 * c * c + (2 + 11 * b) * c  # 2 LayerNorms (2C + 2bC), qkv, proj, fc, proj (9bC biases)
    return cfg.vocab_size * c + cfg.block_size * c + cfg.n_layer * per_layer + (1 + b) * c


def _dropout(p: float) -> nn.Module:
    # No module at all when p = 0: nothing in the forward pass then touches the RNG.
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout, self.resid_dropout = _dropout(cfg.dropout), _dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = self.attn_dropout(F.softmax(att.masked_fill(future, float("-inf")), dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = _dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=_dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self._init_weights()

    def _init_weights(self) -> None:
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    std = residual_std if name.endswith("c_proj") else INIT_STD
                    nn.init.normal_(module.weight, mean=0.0, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the context block_size={self.config.block_size}")
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(torch.arange(t, device=idx.device)))
        for block in tr.h:
            x = block(x)
        return F.linear(tr.ln_f(x), tr.wte.weight)


# -- a local Hugging Face GPT-2 checkpoint ---------------------------------------------------

class CheckpointError(UserError):
    """A pretrained checkpoint that is missing or does not fit the model or the data."""


_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_gpt2_config(folder: str | os.PathLike) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 checkpoint folder (its config.json), checked to be
    an architecture this file reproduces exactly."""
    import json

    folder = Path(folder).expanduser()
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json; expected a local Hugging Face GPT-2 folder "
                              f"(save_pretrained's output, e.g. a downloaded 'gpt2'); nothing is downloaded")
    hf = json.loads(path.read_text())
    problems = []
    if hf.get("model_type") != "gpt2":
        problems.append(f"model_type {hf.get('model_type')!r} (expected 'gpt2')")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation {hf['activation_function']!r} (expected GPT-2's tanh GELU)")
    if hf.get("n_inner") not in (None, 4 * hf.get("n_embd", 0)):
        problems.append(f"n_inner {hf['n_inner']} (expected 4 x n_embd)")
    for key, want in (("layer_norm_epsilon", 1e-5), ("scale_attn_weights", True),
                      ("scale_attn_by_inverse_layer_idx", False), ("tie_word_embeddings", True)):
        if hf.get(key, want) != want:
            problems.append(f"{key}={hf[key]!r} (expected {want!r})")
    if problems:
        raise CheckpointError(f"{folder}: not a standard GPT-2: {'; '.join(problems)}")
    return GPTConfig(n_embd=hf["n_embd"], n_layer=hf["n_layer"], n_head=hf["n_head"],
                     block_size=hf["n_positions"], vocab_size=hf["vocab_size"], bias=True)


def load_hf_gpt2(folder: str | os.PathLike, config: GPTConfig | None = None) -> dict[str, torch.Tensor]:
    """The state_dict of :class:`GPT` holding a local Hugging Face GPT-2 checkpoint (float32).

    ``config``: the model it must fit (e.g. ``preset("GPT2")``, or the data's vocabulary). Its
    width, depth, heads and vocabulary must match the checkpoint's; a shorter ``block_size``
    keeps the first rows of the position embedding (nanoGPT's ``crop_block_size``).
    """
    folder = Path(folder).expanduser()
    found = hf_gpt2_config(folder)
    if config is not None:
        if config.vocab_size != found.vocab_size:
            raise CheckpointError(f"{folder}: the checkpoint has a vocabulary of {found.vocab_size} tokens, the "
                                  f"model and data have {config.vocab_size}; fine-tune it on a .beton built with "
                                  f"the checkpoint's tokenizer (`lmc beton build text --tokenizer gpt2`)")
        diff = [f"{k} {getattr(found, k)} vs {getattr(config, k)}" for k in ("n_embd", "n_layer", "n_head", "bias")
                if getattr(found, k) != getattr(config, k)]
        if diff:
            raise CheckpointError(f"{folder}: checkpoint and model differ ({', '.join(diff)}); use the checkpoint's "
                                  f"shape (hf_gpt2_config) or the matching preset")
        if config.block_size > found.block_size:
            raise CheckpointError(f"{folder}: block_size {config.block_size} exceeds the checkpoint's context "
                                  f"{found.block_size}; use at most {found.block_size}")
    from transformers import GPT2LMHeadModel

    try:
        hf_state = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).float().state_dict()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot read its weights ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]})") from None
    state = {}
    for key, value in hf_state.items():
        if key == "lm_head.weight" or key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # the tied output layer (= wte) and old versions' causal-mask buffers
        state[key] = value.t().contiguous() if key.endswith(_CONV1D) else value.clone()
    if config is not None and config.block_size < found.block_size:
        state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:config.block_size].clone()
    target = config or found
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(target).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        raise CheckpointError(f"{folder}: its weights do not map onto GPT (missing {missing[:3]}, unexpected "
                              f"{extra[:3]}, or shapes differ)")
    return state
