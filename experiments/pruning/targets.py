"""Which parameters pruning may touch.

PLATON (and our magnitude baseline) prune one global pool made of a transformer's attention
Q, K, V and output matrices and both MLP matrices: a model names them with a
``prunable_names()`` method (``experiments.models.vit.ViT`` does). Embeddings, norms, biases
and the classifier head stay dense. The reference ``Pruner.py`` also prunes those layers'
biases; we keep them dense, as the write-up (seed 001) and the issue ask for the matrices.
"""
from __future__ import annotations

from torch import nn

from .masks import PruningError


def prunable_parameters(model: nn.Module, names: tuple[str, ...] | None = None) -> dict[str, nn.Parameter]:
    """The prunable parameters of ``model`` in a fixed order (which also breaks ties).

    ``names`` defaults to ``model.prunable_names()``. A frozen parameter (``requires_grad``
    False) is left out: it cannot learn, and without a gradient it would have no score.
    """
    kind = type(model).__name__
    if names is None:
        method = getattr(model, "prunable_names", None)
        names = tuple(method()) if callable(method) else ()
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise PruningError(f"{kind} has no parameter {unknown[0]!r} to prune; "
                           f"its parameters are {', '.join(list(params)[:6])}, ...")
    chosen = {n: params[n] for n in names if params[n].requires_grad}
    if not chosen:
        why = "all its prunable matrices are frozen" if names else "it names no attention or MLP matrices"
        raise PruningError(f"model {kind} has no prunable matrices ({why}); PLATON and magnitude pruning "
                           "act on a transformer's attention and MLP weights: use model 'vit'")
    return chosen
