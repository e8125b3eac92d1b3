"""The paper's published numbers (Altıntaş et al., arXiv 2312.09832), for side-by-side tables.

Barriers are 100·B (percent); ``None`` marks a cell the paper reports as unstable. Table 3's
parameter counts live beside the models (``experiments.models.PAPER_MILLIONS``).
"""
from __future__ import annotations

# Table 1: L-layer linear networks on MNIST. (rows) -> (optimizer, lr) -> (test, train).
TABLE1 = {
    ("1-Layer", 30000): {("sgd", 0.1): (0.05, 0.01), ("sgd", 0.01): (0.00, 0.00),
                         ("adam", 0.005): (0.03, 0.00), ("adam", 0.001): (0.01, 0.01)},
    ("1-Layer", 1024): {("sgd", 0.1): (0.06, 0.04), ("sgd", 0.01): (0.06, 0.00),
                        ("adam", 0.005): (0.12, 0.07), ("adam", 0.001): (0.08, 0.05)},
    ("2-Layer", 30000): {("sgd", 0.1): (0.01, 0.01), ("sgd", 0.01): (0.00, 0.00),
                         ("adam", 0.005): (0.11, 0.14), ("adam", 0.001): (0.05, 0.01)},
    ("2-Layer", 1024): {("sgd", 0.1): (0.01, 0.14), ("sgd", 0.01): (0.05, 0.09),
                        ("adam", 0.005): (1.30, 1.45), ("adam", 0.001): (0.18, 0.16)},
    ("4-Layer", 1024): {("sgd", 0.1): (0.06, 0.06), ("sgd", 0.01): (0.02, 0.01),
                        ("adam", 0.005): (47.74, 48.91), ("adam", 0.001): (0.07, 0.14)},
    ("8-Layer", 1024): {("sgd", 0.1): (None, None), ("sgd", 0.01): (0.06, 0.00),
                        ("adam", 0.005): (68.22, 68.87), ("adam", 0.001): (73.78, 74.32)},
}

# Table 2: the minimal model (1 hidden layer, ReLU). column -> (test, train).
TABLE2 = {
    "SGD ↑lr": (0.05, 0.00),
    "SGD ↑lr + W-up": (0.02, 0.00),
    "ADAM ↓lr": (0.06, 0.00),
    "ADAM ↑lr": (2.86, 2.92),
    "ADAM ↑lr + W-up": (0.23, 0.17),
}

# Table 4: test accuracy (%) of L-layer MLPs, SGD (high lr 0.1, medium lr 0.01).
TABLE4 = {
    "mnist": {2: (98.32, 98.34), 4: (98.41, 98.19), 8: (98.41, 97.14)},
    "cifar10": {2: (None, 54.24), 4: (58.75, 55.51), 8: (57.44, 54.45)},
    "cifar100": {2: (None, 26.01), 4: (14.26, 27.16), 8: (25.33, 20.30)},
    "tiny_imagenet": {2: (None, 7.62), 4: (1.68, 8.27), 8: (5.80, 5.79)},
}

_SPLIT_INDEX = {"test": 0, "train": 1}


def _nearest_table1_row(depth: int) -> tuple[str, int]:
    """Table 1 has depths 1, 2, 4, 8 at batch size 1024 (1 and 2 also at 30K)."""
    nearest = min((1, 2, 4, 8), key=lambda d: (abs(d - depth), d))
    return f"{nearest}-Layer", 1024


def paper_reference(model: str, depth: int, optimizer: str, lr: float, split: str,
                    warmup: bool = False) -> tuple[str, float | None]:
    """(where in the paper, the paper's barrier in percent) for the cell nearest a setting.

    Linear networks map to Table 1 (nearest depth and learning rate, batch 1024); the
    minimal model (a one-hidden-layer ReLU MLP) maps to Table 2.
    """
    i = _SPLIT_INDEX[split]
    if model == "mlp" and depth == 2:
        high = lr >= (0.1 if optimizer == "sgd" else 0.005)
        name = {("sgd", True): "SGD ↑lr", ("sgd", False): "SGD ↑lr",
                ("adam", True): "ADAM ↑lr", ("adam", False): "ADAM ↓lr"}[(optimizer, high)]
        if warmup and high:
            name += " + W-up"
        return f"Table 2, {name}", TABLE2[name][i]
    if model == "linear":
        row = _nearest_table1_row(depth)
        cells = {k: v for k, v in TABLE1[row].items() if k[0] == optimizer}
        key = min(cells, key=lambda k: abs(k[1] - lr))
        return f"Table 1, {row[0]} BS={row[1]}, {optimizer.upper()} {key[1]:g}", cells[key][i]
    return "not in the paper's tables", None


# -- lookups by the labels the grids use (experiments/grids/*.toml) -----------------------------

def table1_label(row: tuple[str, int]) -> str:
    """("1-Layer", 30000) -> "1-Layer, BS=30K": the row labels of Table 1."""
    name, batch = row
    return f"{name}, BS={'30K' if batch == 30000 else batch}"


TABLE1_ROWS = {table1_label(row): row for row in TABLE1}
TABLE1_COLUMNS = {f"{opt.upper()} {lr:g}": (opt, lr) for opt, lr in TABLE1[("1-Layer", 30000)]}
TABLE4_DATASETS = {"MNIST": "mnist", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "TinyImageNet": "tiny_imagenet"}
TABLE4_RATES = {"High": 0, "Med": 1}


def table1_cell(row_label: str, column_label: str, split: str) -> float | None:
    """The paper's barrier (%) of a Table 1 cell; None where the paper reports unstable training."""
    return TABLE1[TABLE1_ROWS[row_label]][TABLE1_COLUMNS[column_label]][_SPLIT_INDEX[split]]


def table2_cell(column_label: str, split: str) -> float:
    return TABLE2[column_label][_SPLIT_INDEX[split]]


def table4_cell(dataset_label: str, depth_label: str, rate_label: str) -> float | None:
    """The paper's test accuracy (%) of an L-layer MLP; None where the paper reports unstable training."""
    depth = int(depth_label.split("-")[0])
    return TABLE4[TABLE4_DATASETS[dataset_label]][depth][TABLE4_RATES[rate_label]]
