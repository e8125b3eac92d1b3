"""A tiny training on real digits, run by tests/test_numerics.py in a fresh process whose
environment picks the CPU code paths. Prints one JSON line: {model: sha256 of its weights}.

    python tests/numerics_child.py DIGITS.npz

Three models cover the op families of the study: a ReLU MLP with SGD momentum (matmuls,
cross-entropy), a deep linear net with fused ADAM, and a layer-norm + softmax-attention block
(the attention model's ops, whose backward sums per thread).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmc import numerics  # noqa: E402

numerics.apply()  # before torch loads; a no-op under LMC_NUMERICS=native

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


class TinyAttention(nn.Module):
    """Each image as 16 tokens of 49 pixels: embed, layer norm, one softmax attention, classify."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.embed, self.norm = nn.Linear(49, dim), nn.LayerNorm(dim)
        self.qkv, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.norm(self.embed(x.reshape(len(x), 16, 49)))
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attn = (q @ k.transpose(1, 2) / 8.0).softmax(-1)
        return self.head((attn @ v).mean(1))


def models():
    def linear(*sizes):
        layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        return nn.Sequential(*layers)

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    deep = linear(784, 128, 128, 128, 10)
    attn = TinyAttention()
    return {"mlp, SGD momentum": (mlp, torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)),
            "4-layer linear, fused ADAM": (deep, torch.optim.Adam(deep.parameters(), lr=0.005, fused=True)),
            "layer norm + attention, ADAM": (attn, torch.optim.Adam(attn.parameters(), lr=0.005))}


def main(data: str, steps: int = 6, batch: int = 128) -> None:
    numerics.configure_torch()
    arrays = np.load(data)
    x = (torch.from_numpy(arrays["x"]).float().reshape(len(arrays["x"]), -1) - 33.3) / 78.6
    y = torch.from_numpy(arrays["y"])
    out = {}
    for name, (model, opt) in models().items():
        for step in range(steps):
            i = slice((step * batch) % len(x), (step * batch) % len(x) + batch)
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[name] = numerics.state_digest(model.state_dict())
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
