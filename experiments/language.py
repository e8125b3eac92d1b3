"""Language modelling as pure functions: the loss, true gradient accumulation, evaluation.

No loop, optimiser or schedule lives here (the trainer owns those); these are the pieces a
"language-modelling task" plugs in.

**Gradient accumulation, done right.** Seed 002 simulated a large batch by calling backward
``k`` times on the *same* micro-batch, so its effective batch was the micro-batch. Here the
``k`` micro-batches of one step are distinct slices of the step's batch, and each one's mean
loss is scaled by its share of the step's tokens, so the summed gradient equals the gradient
of the full batch's mean loss (tested to float tolerance against one full-batch backward).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of the batch: x, y (B, T) int64."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def micro_batches(x: torch.Tensor, y: torch.Tensor, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The step's batch cut into ``count`` distinct consecutive micro-batches (sizes differ by at
    most one). ``count`` must not exceed the batch size: no micro-batch is ever empty or reused."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(x):
        raise ValueError(f"micro-batch count must be an integer in 1..{len(x)} (the batch size), got {count!r}")
    return list(zip(x.tensor_split(count), y.tensor_split(count)))


def accumulate(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               loss_fn: LossFn = lm_loss) -> torch.Tensor:
    """Backward through each micro-batch in turn, adding to ``.grad``; return the step's mean loss.

    ``loss_fn(model, x, y)`` returns the mean loss over ``y``'s elements (tokens, or samples for
    images); micro-batch j's loss is weighted by ``y_j.numel() / Σ y.numel()``, so the gradients
    add up to that of the whole step's mean loss, whatever the micro-batch sizes. Zeroing the
    gradients before the step is the caller's (as with any backward).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("accumulate needs at least one micro-batch")
    total = sum(y.numel() for _, y in batches)
    step_loss = None
    for x, y in batches:
        loss = loss_fn(model, x, y) * (y.numel() / total)
        loss.backward()
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
    return step_loss


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 256) -> dict:
    """Mean next-token cross-entropy, perplexity and token error over every window, in order.

    ``windows``: int64 (M, T + 1) from ``pipelines.text.eval_windows`` (on any device); each
    window predicts its T last tokens from the T first. Sums are taken in float64, so the result
    depends on the batch size only through the model's own float arithmetic.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if windows.ndim != 2 or windows.shape[1] < 2 or len(windows) == 0:
        raise ValueError(f"windows must be (M >= 1, T + 1 >= 2) token ids, got shape {tuple(windows.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, len(windows), batch_size):
            w = windows[start:start + batch_size].to(device)
            x, y = w[:, :-1], w[:, 1:]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum()
    finally:
        model.train(was_training)
    tokens = windows[:, 1:].numel()
    loss = loss_sum.item() / tokens
    accuracy = correct.item() / tokens
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": accuracy, "error": 1.0 - accuracy,
            "tokens": tokens}
