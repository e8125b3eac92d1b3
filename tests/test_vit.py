"""The ViT family: parameter counts against the closed form, the pre-LN residual structure, and
initialisation from a local Hugging Face checkpoint (same logits as transformers' own model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from experiments.models import build_model, count_parameters
from experiments.models.hf_vit import (CheckpointError, checkpoint_sha256, load_hf_vit, load_state_into,
                                       read_hf_vit, vit_config_from_hf)
from experiments.models.vit import ViT, ViTConfig, vit_parameter_count

# transformers only builds and saves models here; it must never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CIFAR_SHAPE = (3, 32, 32)
# A tiny Hugging Face ViT: 32x32 images, patch 4, 2 blocks of width 32, 4 heads, MLP 64.
HF_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               image_size=32, patch_size=4, num_channels=3)


def seeded(seed: int, cfg: ViTConfig) -> ViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViT(cfg)


# --- the model -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, classes, kw", [
    (CIFAR_SHAPE, 10, dict(patch=4, depth=6, width=192, heads=3)),
    (CIFAR_SHAPE, 200, dict(patch=8, depth=2, width=64, heads=4, mlp_ratio=2.0, qkv_bias=False)),
    ((1, 28, 28), 10, dict(patch=7, depth=1, width=48, heads=6, mlp_ratio=1.5)),
])
def test_parameter_count_matches_the_closed_form(shape, classes, kw):
    cfg = ViTConfig(shape, classes, **kw)
    with torch.device("meta"):
        model = ViT(cfg)
    assert count_parameters(model) == vit_parameter_count(cfg)


def test_vit_b16_has_the_published_count():
    """ViT-B/16 at 224x224 with 1000 classes: 86,567,656 parameters (the paper's 86 M; timm's count)."""
    with torch.device("meta"):
        model = build_model("vit", (3, 224, 224), 1000, kernel=16, depth=12, width=768, heads=12)
    assert count_parameters(model) == 86_567_656


def test_blocks_are_pre_layernorm_residuals_and_the_head_reads_the_class_token():
    model = seeded(0, ViTConfig(CIFAR_SHAPE, 10, depth=2, width=32, heads=4))
    x = torch.rand(3, *CIFAR_SHAPE)
    out = model(x)
    assert not torch.allclose(out[0], out[1]), "the class token must see the patches through attention"
    # Zero each block's two output layers: with residuals every block becomes the identity, so the
    # class token never meets the image and every input gives head(norm(cls + pos[0])).
    with torch.no_grad():
        for block in model.blocks:
            for layer in (block.attn.out, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
        expected = model.head(model.norm(model.cls_token[0, 0] + model.pos_embed[0, 0]))
        torch.testing.assert_close(model(x), expected.expand(3, -1))
    names = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert names == {"blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2", "norm"}


def test_prunable_names_are_the_attention_and_mlp_matrices():
    model = build_model("vit", CIFAR_SHAPE, 10, depth=2, width=32, heads=4)
    names = model.prunable_names()
    assert len(names) == 12 and all(n.endswith(".weight") for n in names)
    assert {n.split(".", 2)[2] for n in names} == {"attn.query.weight", "attn.key.weight", "attn.value.weight",
                                                   "attn.out.weight", "mlp.fc1.weight", "mlp.fc2.weight"}
    assert all(dict(model.named_parameters())[n].dim() == 2 for n in names)


def test_init_is_vits_truncated_normal():
    model = seeded(1, ViTConfig(CIFAR_SHAPE, 10, depth=4, width=256, heads=8))
    w = torch.cat([model.blocks[i].mlp.fc1.weight.flatten() for i in range(4)])
    # trunc_normal_'s bounds are absolute ([-2, 2] = +-100 std, as in timm): in effect N(0, 0.02).
    assert abs(w.std().item() - 0.02) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert all(b.abs().sum() == 0 for n, b in model.named_parameters()
                                       if n.endswith("bias") and "norm" not in n)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(width=30, heads=4), "heads=4 must divide the ViT's width 30"),
    (dict(width=32, heads=4, mlp_ratio=1.01), "mlp_ratio must be a positive number with mlp_ratio * width"),
    (dict(width=32, heads=4, kernel=5), "kernel (patch size)=5 must divide"),
    (dict(mlp_ratio=0), "mlp_ratio must be a positive number, got 0"),
])
def test_bad_vit_hyperparameters_are_refused(kwargs, expected):
    with pytest.raises(ValueError) as err:
        build_model("vit", CIFAR_SHAPE, 10, **kwargs)
    assert expected in str(err.value)


# --- Hugging Face checkpoints ------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny randomly initialised transformers ViTForImageClassification, saved to disk.

    Every parameter is redrawn from N(0, 0.2), LayerNorms and biases included: at HF's own init
    (LayerNorms at 1 and 0, biases 0) a swapped norm or bias would go unnoticed."""
    from transformers import ViTConfig as HFConfig, ViTForImageClassification

    torch.manual_seed(123)
    hf = ViTForImageClassification(HFConfig(**HF_TINY, num_labels=10)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
    folder = tmp_path_factory.mktemp("hf_vit")
    hf.save_pretrained(folder)
    return folder, hf


def test_hf_checkpoint_gives_the_same_logits(hf_folder):
    folder, hf = hf_folder
    cfg = vit_config_from_hf(folder, num_classes=10)
    assert (cfg.patch, cfg.depth, cfg.width, cfg.heads, cfg.mlp_ratio, cfg.layer_norm_eps) == (4, 2, 32, 4, 2.0, 1e-12)
    model = seeded(0, cfg)
    report = load_hf_vit(folder, model)
    assert report.reinitialised == () and report.ignored == () and len(report.loaded) == len(model.state_dict())
    x = torch.randn(8, *CIFAR_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        got = model(x)
    assert expected.abs().max() > 0.5  # logits far from zero: the comparison has teeth
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The check can fail: swapping the two LayerNorms of a block changes the function.
    with torch.no_grad():
        block = model.blocks[1]
        w1, w2 = block.norm1.weight.clone(), block.norm2.weight.clone()
        block.norm1.weight.copy_(w2)
        block.norm2.weight.copy_(w1)
        assert (model(x) - expected).abs().max() > 1e-2


def test_pytorch_bin_checkpoints_load_too(hf_folder, tmp_path):
    folder, hf = hf_folder
    from safetensors.torch import load_file

    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(load_file(str(folder / "model.safetensors")), tmp_path / "pytorch_model.bin")
    model = seeded(0, vit_config_from_hf(tmp_path, 10))
    load_hf_vit(tmp_path, model)
    x = torch.randn(2, *CIFAR_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model.blocks[0].norm1.bias, torch.zeros(32))


def test_a_head_that_does_not_fit_keeps_its_seeded_init(hf_folder):
    folder, _ = hf_folder
    cfg = vit_config_from_hf(folder, num_classes=7)
    model = seeded(5, cfg)
    report = load_hf_vit(folder, model)
    assert report.reinitialised == ("head.weight", "head.bias")
    fresh = seeded(5, cfg).state_dict()  # the same init seed draws the same head
    assert torch.equal(model.head.weight, fresh["head.weight"]) and torch.equal(model.head.bias, fresh["head.bias"])
    _, state, _ = read_hf_vit(folder)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])


def test_a_headless_vitmodel_checkpoint_loads_and_its_pooler_is_ignored(tmp_path):
    from transformers import ViTConfig as HFConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(HFConfig(**HF_TINY)).save_pretrained(tmp_path)
    model = seeded(0, vit_config_from_hf(tmp_path, 10))
    report = load_hf_vit(tmp_path, model)
    assert report.reinitialised == ("head.weight", "head.bias")
    assert report.ignored == ("pooler.dense.bias", "pooler.dense.weight")


@pytest.mark.parametrize("cfg_kwargs, expected", [
    (dict(input_shape=(3, 16, 16)), "parameter 'pos_embed' has shape (1, 65, 32), the model needs (1, 17, 32)"),
    (dict(input_shape=(3, 16, 16), patch=2), "parameter 'patch_embed.weight' has shape (32, 3, 4, 4), the model "
                                             "needs (32, 3, 2, 2)"),
    (dict(depth=1), "has parameter 'blocks.1.attn.key.bias'"),
    (dict(heads=2), "num_attention_heads=4, the model has heads=2"),
    (dict(qkv_bias=False), "has parameter 'blocks.0.attn.key.bias'"),
])
def test_an_incompatible_checkpoint_names_the_parameter_and_copies_nothing(hf_folder, cfg_kwargs, expected):
    folder, _ = hf_folder
    base = dict(input_shape=CIFAR_SHAPE, num_classes=10, patch=4, depth=2, width=32, heads=4, mlp_ratio=2.0)
    model = seeded(0, ViTConfig(**{**base, **cfg_kwargs}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_hf_vit(folder, model)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_or_foreign_checkpoints_are_one_line_errors(tmp_path, hf_folder):
    model = seeded(0, ViTConfig(CIFAR_SHAPE, 10, depth=2, width=32, heads=4, mlp_ratio=2.0))
    with pytest.raises(CheckpointError, match="config.json is missing; expected a folder written by"):
        load_hf_vit(tmp_path / "nowhere", model)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(CheckpointError, match="no weights in"):
        load_hf_vit(tmp_path, model)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type='bert', not a ViT"):
        vit_config_from_hf(tmp_path, 10)
    folder, _ = hf_folder
    mlp = build_model("mlp", CIFAR_SHAPE, 10)
    with pytest.raises(CheckpointError, match="initialises model 'vit' only"):
        load_hf_vit(folder, mlp)


def test_our_own_state_dicts_load_with_the_same_rules():
    """A pretraining run's final weights (200 classes) into a CIFAR-10 model: body copied, head seeded."""
    source = seeded(0, ViTConfig(CIFAR_SHAPE, 200, depth=2, width=32, heads=4))
    target = seeded(1, ViTConfig(CIFAR_SHAPE, 10, depth=2, width=32, heads=4))
    head = target.head.weight.clone()
    report = load_state_into(target, source.state_dict(), "pretrain/final.pt")
    assert report.reinitialised == ("head.weight", "head.bias") and torch.equal(target.head.weight, head)
    assert torch.equal(target.pos_embed, source.pos_embed)


def test_checkpoint_sha256_follows_the_content(hf_folder, tmp_path):
    folder, _ = hf_folder
    first = checkpoint_sha256(folder)
    assert first == checkpoint_sha256(folder)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert checkpoint_sha256(copy) == first  # content, not location
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert checkpoint_sha256(copy) != first


def test_loading_never_imports_transformers(hf_folder):
    folder, _ = hf_folder
    code = ("import sys; from experiments.models.hf_vit import vit_config_from_hf, load_hf_vit; "
            "from experiments.models.vit import ViT; "
            f"load_hf_vit({str(folder)!r}, ViT(vit_config_from_hf({str(folder)!r}, 10))); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
