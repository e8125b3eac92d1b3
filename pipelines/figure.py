"""The paper's Figure 4: first batches of loaders initialised several times with fixed seeds.

Each (order seed, augmentation seed) pair gets ``inits`` fresh loaders; each row shows the
first batch of one of them. Rows of the same pair must be identical, which the figure's title
states and ``render`` returns, so the check does not rest on eyeballing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PAPER_SEEDS = ((43, 43), (118, 118))


def first_batches(beton, *, seed_pairs=PAPER_SEEDS, inits: int = 3, images: int = 8,
                  augment="translate_flip") -> list[dict]:
    """One row per (seed pair, initialisation): uint8 (n, C, H, W) images, labels, indices."""
    from pipelines.loader import make_loader

    rows = []
    for order_seed, aug_seed in seed_pairs:
        for init in range(inits):
            loader = make_loader(beton, batch_size=images, order_seed=order_seed, aug_seed=aug_seed,
                                 augment=augment, normalize=False)
            x, y, idx = next(iter(loader.iter_epoch(0)))
            rows.append({"order_seed": order_seed, "aug_seed": aug_seed, "init": init + 1,
                         "images": x.cpu().numpy(), "labels": y.cpu().numpy(), "indices": idx.cpu().numpy()})
    return rows


def identical_per_pair(rows: list[dict]) -> dict[str, bool]:
    """For each seed pair: were all its initialisations bitwise identical?"""
    out: dict[str, bool] = {}
    for row in rows:
        key = f"{row['order_seed']},{row['aug_seed']}"
        first = next(r for r in rows if f"{r['order_seed']},{r['aug_seed']}" == key)
        same = all(np.array_equal(row[k], first[k]) for k in ("images", "labels", "indices"))
        out[key] = out.get(key, True) and same
    return out


def render(beton, out: str | os.PathLike, *, seed_pairs=PAPER_SEEDS, inits: int = 3, images: int = 8,
           augment="translate_flip") -> dict:
    """Save the grid as a PNG; return which seed pairs reproduced bitwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmc.manifest import read_manifest
    from lmc.io import atomic_write_with

    rows = first_batches(beton, seed_pairs=seed_pairs, inits=inits, images=images, augment=augment)
    same = identical_per_pair(rows)
    names = read_manifest(beton).get("label_names")
    ncols = rows[0]["images"].shape[0]
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.1 * ncols + 1.6, 1.2 * len(rows) + 0.8), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            img = row["images"][c].transpose(1, 2, 0)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            label = int(row["labels"][c])
            ax.set_title(f"#{row['indices'][c]} {names[label] if names else label}", fontsize=6, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"seeds {row['order_seed']}/{row['aug_seed']}\ninit {row['init']}", fontsize=7)
    verdict = ", ".join(f"({k}): {'identical' if v else 'DIFFERENT'}" for k, v in same.items())
    fig.suptitle(f"First batch, {inits} initialisations per (order seed, aug seed); {verdict}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    plt.close(fig)
    return {"out": str(out), "identical": same, "augment": augment}
