"""Initialise our ViT from a LOCAL checkpoint: a Hugging Face ViT folder, or a state_dict of ours.

A Hugging Face folder is what ``ViTForImageClassification.save_pretrained`` (or ``ViTModel``'s)
writes: ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin`` (or sharded, with an
``.index.json``). It is read with ``safetensors``/``torch.load`` alone: transformers is not
imported and nothing is ever downloaded.

    cfg = vit_config_from_hf(folder, num_classes=10, input_shape=(3, 32, 32))
    model = <build ViT(cfg) seeded with the init seed>
    report = load_hf_vit(folder, model)      # report.reinitialised: ('head.weight', 'head.bias')

Rules (``load_state_into``): every parameter of the model must come from the checkpoint with
its exact shape, except the classification head: a head that is missing (a ``ViTModel``
checkpoint) or has another number of classes is left as the model was built, i.e. drawn from
the init seed, and listed in the report. Anything else that does not fit (a missing matrix,
another width, depth, patch size or image size, a parameter the model lacks) is one
``CheckpointError`` naming the parameter, raised before any weight is copied.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lmc.errors import UserError
from lmc.io import sha256_file

from .vit import ViT, ViTConfig

CONFIG_FILE = "config.json"
# In the order Hugging Face prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# Hugging Face name (without the optional "vit." prefix) -> ours. Both generations of names:
# the on-disk names every published checkpoint uses (and save_pretrained still writes) and
# transformers 5's in-memory module names.
_RENAMES = [(re.compile(p), r) for p, r in [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed."),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^(?:encoder\.layer\.(\d+)\.attention\.attention\.query|layers\.(\d+)\.attention\.q_proj)\.", r"blocks.\1\2.attn.query."),
    (r"^(?:encoder\.layer\.(\d+)\.attention\.attention\.key|layers\.(\d+)\.attention\.k_proj)\.", r"blocks.\1\2.attn.key."),
    (r"^(?:encoder\.layer\.(\d+)\.attention\.attention\.value|layers\.(\d+)\.attention\.v_proj)\.", r"blocks.\1\2.attn.value."),
    (r"^(?:encoder\.layer\.(\d+)\.attention\.output\.dense|layers\.(\d+)\.attention\.o_proj)\.", r"blocks.\1\2.attn.out."),
    (r"^(?:encoder\.layer\.(\d+)\.intermediate\.dense|layers\.(\d+)\.mlp\.fc1)\.", r"blocks.\1\2.mlp.fc1."),
    (r"^(?:encoder\.layer\.(\d+)\.output\.dense|layers\.(\d+)\.mlp\.fc2)\.", r"blocks.\1\2.mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]]


class CheckpointError(UserError):
    """An init checkpoint that is missing, unreadable or does not fit the model."""


@dataclass(frozen=True)
class InitReport:
    """What ``load_state_into`` did: the caller logs it into the run's provenance."""
    source: str
    loaded: tuple[str, ...]          # our parameter names copied from the checkpoint
    reinitialised: tuple[str, ...]   # head parameters that did not fit: kept at the seeded init
    ignored: tuple[str, ...]         # checkpoint entries with no counterpart (e.g. HF's pooler)
    notes: tuple[str, ...] = ()      # harmless differences (e.g. LayerNorm epsilon)


_HINT = ("expected a folder written by ViTForImageClassification.save_pretrained (config.json + "
         "model.safetensors or pytorch_model.bin); nothing is downloaded, so copy it onto this machine")


def _config_file(folder: str | Path) -> Path:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no Hugging Face ViT checkpoint at {folder}: {CONFIG_FILE} is missing; {_HINT}")
    return path


def _weight_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            return [folder / s for s in sorted(set(json.loads(path.read_text())["weight_map"].values()))]
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"unreadable shard index {path} ({err}); re-save the checkpoint") from None
    raise CheckpointError(f"no weights in {folder}: none of {', '.join(WEIGHT_FILES)}; {_HINT}")


def read_hf_config(folder: str | Path) -> dict:
    config_file = _config_file(folder)
    try:
        config = json.loads(config_file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{config_file} is not valid JSON ({err}); re-save the checkpoint") from None
    if config.get("model_type") != "vit":
        raise CheckpointError(f"{config_file} describes model_type={config.get('model_type')!r}, not a ViT "
                              "('vit'); point the init checkpoint at a ViT folder")
    return config


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint shard {path} is missing; copy the whole checkpoint folder") from None
    except Exception as err:  # safetensors and pickle raise many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint weights {path} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); re-save or re-copy it") from None


def _our_name(hf_name: str) -> str | None:
    name = hf_name[4:] if hf_name.startswith("vit.") else hf_name
    for pattern, replacement in _RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def read_hf_vit(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], tuple[str, ...]]:
    """(HF config, state_dict in our names, HF entries without a counterpart) of a local folder."""
    config = read_hf_config(folder)
    state, ignored = {}, []
    for path in _weight_files(folder):
        for hf_name, tensor in _load_tensors(path).items():
            ours = _our_name(hf_name)
            if ours is None:
                ignored.append(hf_name)
            else:
                state[ours] = tensor
    return config, state, tuple(sorted(ignored))


def vit_config_from_hf(folder: str | Path, num_classes: int,
                       input_shape: tuple[int, int, int] | None = None) -> ViTConfig:
    """Our ViTConfig for a Hugging Face folder's architecture (``input_shape`` defaults to the
    checkpoint's (num_channels, image_size, image_size)); the head gets ``num_classes``."""
    c = read_hf_config(folder)
    _check_activation(c, folder)
    try:
        shape = input_shape or (c.get("num_channels", 3), c["image_size"], c["image_size"])
        return ViTConfig(tuple(shape), num_classes, patch=c["patch_size"], depth=c["num_hidden_layers"],
                         width=c["hidden_size"], heads=c["num_attention_heads"],
                         mlp_ratio=c["intermediate_size"] / c["hidden_size"], qkv_bias=c.get("qkv_bias", True),
                         layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)))
    except KeyError as err:
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE} lacks {err}; re-save the checkpoint") from None


def _check_activation(config: dict, folder) -> None:
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{Path(folder) / CONFIG_FILE}: hidden_act={config['hidden_act']!r}, but our ViT "
                              "uses the exact GELU ('gelu'); use a checkpoint trained with it")


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                    ignored: tuple[str, ...] = ()) -> InitReport:
    """Copy ``state`` (our names) into ``model`` by the rules of the module docstring."""
    head = set(getattr(model, "head_names", ()))
    params = dict(model.named_parameters())
    extra = sorted(set(state) - set(params))
    if extra:
        raise CheckpointError(f"init checkpoint {source} has parameter {extra[0]!r} {tuple(state[extra[0]].shape)} "
                              "that the model lacks (another depth?); build the model with the checkpoint's "
                              "architecture")
    loaded, reinitialised = [], []
    for name, param in params.items():
        tensor = state.get(name)
        if name in head and (tensor is None or tensor.shape != param.shape):
            reinitialised.append(name)
            continue
        if tensor is None:
            raise CheckpointError(f"init checkpoint {source} has no parameter {name!r}; use a checkpoint of the "
                                  "same architecture (qkv biases, depth)")
        if tensor.shape != param.shape:
            raise CheckpointError(f"init checkpoint {source}: parameter {name!r} has shape {tuple(tensor.shape)}, "
                                  f"the model needs {tuple(param.shape)}; match the checkpoint's patch size, width, "
                                  "MLP ratio and image size")
        loaded.append(name)
    with torch.no_grad():
        for name in loaded:
            params[name].copy_(state[name])
    return InitReport(source, tuple(loaded), tuple(reinitialised), tuple(ignored))


def load_hf_vit(folder: str | Path, model: nn.Module) -> InitReport:
    """Load a local Hugging Face ViT folder into our ``ViT`` in place (see the module docstring)."""
    if not isinstance(model, ViT):
        raise CheckpointError(f"a Hugging Face ViT checkpoint initialises model 'vit' only, not "
                              f"{type(model).__name__}; set model=vit")
    config, state, ignored = read_hf_vit(folder)
    _check_activation(config, folder)
    heads = config.get("num_attention_heads")
    if heads != model.config.heads:  # invisible in the shapes, so checked by name
        raise CheckpointError(f"init checkpoint {folder}: num_attention_heads={heads}, the model has "
                              f"heads={model.config.heads}; set heads={heads}")
    report = load_state_into(model, state, str(folder), ignored)
    eps = float(config.get("layer_norm_eps", 1e-12))
    if eps != model.config.layer_norm_eps:
        note = f"LayerNorm epsilon: checkpoint {eps:g}, model {model.config.layer_norm_eps:g}"
        report = InitReport(report.source, report.loaded, report.reinitialised, report.ignored, (note,))
    return report


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint's content (a file, or a HF folder's config and weight files):
    a run initialised from it must change its name when this changes."""
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = [_config_file(path), *_weight_files(path)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()
