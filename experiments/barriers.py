"""Barriers along an interpolation path (numpy only, so analysis code can reuse it).

Definitions (``../shared/SPEC.md``, from the paper's section 2):

* error barrier (Eq. 1): B = sup_α ℰ(Θ(α)) − ½(ℰ(Θ_A) + ℰ(Θ_B)), ℰ = 1 − accuracy;
* normalised, performance-aware barrier (Eq. 2): B̄ = B / (½(Acc_test(Θ_A) + Acc_test(Θ_B))).
  As in the paper, the denominator is the endpoints' *test* accuracy for every split;
* loss barrier: sup_α L(Θ(α)) − ½(L(Θ_A) + L(Θ_B)) (the ViT write-up's criterion);
* maximum deviation from the straight line between the endpoints:
  sup_α ℰ(Θ(α)) − ((1−α)ℰ(Θ_A) + αℰ(Θ_B)) (open_lth's "instability" uses this form).

The supremum is taken over the evaluated α, endpoints included, so the error and loss
barriers and the deviation are all ≥ 0, and exactly 0 when the path is flat.
"""
from __future__ import annotations

import math

import numpy as np

# Frankle et al.'s threshold for "linearly mode-connected".
LMC_THRESHOLD = 0.02


def alphas(num: int = 11) -> np.ndarray:
    """``num`` evenly spaced α from 0 to 1 inclusive (11 gives 0, 0.1, …, 1)."""
    if num < 2:
        raise ValueError(f"need at least 2 interpolation points (α = 0 and 1), got {num}")
    return np.linspace(0.0, 1.0, num)


def barriers(alpha, error, loss, test_acc_endpoints: tuple[float, float] | None = None) -> dict:
    """All barriers of one curve. ``alpha`` must start at 0 and end at 1."""
    alpha = np.asarray(alpha, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if alpha[0] != 0.0 or alpha[-1] != 1.0:
        raise ValueError("the interpolation grid must include both endpoints, α = 0 and α = 1")
    err_a, err_b = error[0], error[-1]
    error_barrier = float(error.max() - 0.5 * (err_a + err_b))
    loss_barrier = float(loss.max() - 0.5 * (loss[0] + loss[-1])) if np.all(np.isfinite(loss)) else math.inf
    line = (1 - alpha) * err_a + alpha * err_b
    if test_acc_endpoints is None:
        test_acc_endpoints = (1 - err_a, 1 - err_b)
    mean_test_acc = 0.5 * (test_acc_endpoints[0] + test_acc_endpoints[1])
    return {
        "error_barrier": error_barrier,
        "error_barrier_pct": 100.0 * error_barrier,
        "normalized_barrier": error_barrier / mean_test_acc if mean_test_acc > 0 else math.inf,
        "loss_barrier": loss_barrier,
        "max_deviation": float((error - line).max()),
        "alpha_at_max_error": float(alpha[int(error.argmax())]),
        "acc_a": float(1 - err_a),
        "acc_b": float(1 - err_b),
        "loss_a": float(loss[0]),
        "loss_b": float(loss[-1]),
        "connected": bool(error_barrier < LMC_THRESHOLD),
    }
