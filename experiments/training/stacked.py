"""R networks of one shape as one network: weights stacked (R, out, in), one forward for all.

A replica batch trains R runs of the ``linear`` or ``mlp`` family with equal layer shapes as
one stacked network. Each replica also keeps an ordinary ``nn.Module`` (the one
``builders.build_model`` builds from its config) whose parameters are *views* of its slice
of the stack, so its optimiser, its state_dict, its checkpoints and its evaluation are the
single-run trainer's own, and an optimiser step on the views updates the stack in place.

Two kinds of kernels compute the stacked layers (``kernels``):

* ``per-replica``: the forward calls ``addmm`` per replica, the call ``F.linear`` makes
  alone, and the backward calls the two ``mm`` and the bias sum that autograd calls for
  ``addmm`` alone. Bitwise equal to R single runs on the CPU (tested), and no faster: a CPU
  is compute-bound either way.
* ``batched``: one ``baddbmm`` forward and two ``bmm`` backward per layer for all R, the
  kernels that make a GPU step cost about one replica's launches. cuBLAS (and MKL for small
  products) reduce in another order inside a batched product than in a single one, so
  replicas differ from single runs in the last bits, and training grows that; see
  docs/experiments.md for the measured size and its effect on barrier tables.

Nothing reduces across replicas: a replica whose loss becomes NaN stays in its own slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STACKABLE = ("linear", "mlp")
KERNELS = ("auto", "per-replica", "batched")


def resolve_kernels(kernels: str, device: torch.device) -> str:
    """``auto``: bitwise per-replica kernels on the CPU, batched kernels on a GPU."""
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}")
    if kernels == "auto":
        return "batched" if device.type == "cuda" else "per-replica"
    return kernels


class StackedLinear(torch.autograd.Function):
    """``h @ W[r].T + b[r]`` for every replica r: h (R, B, in), W (R, out, in), b (R, out)."""

    @staticmethod
    def forward(ctx, h, weight, bias, batched: bool):
        ctx.save_for_backward(h, weight)
        ctx.batched = batched
        if batched:
            return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        return torch.stack([torch.addmm(bias[r], h[r], weight[r].t()) for r in range(len(weight))])

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        need_h = ctx.needs_input_grad[0]
        if ctx.batched:
            grad_h = torch.bmm(grad, weight) if need_h else None
            return grad_h, torch.bmm(grad.transpose(1, 2), h), grad.sum(1), None
        # What autograd computes for addmm(b, h, W.t()) alone: grad.mm(W) for the input,
        # grad.t().mm(h) for the weight (W.t() is column-major), the bias's grad summed over rows.
        r_range = range(len(weight))
        grad_h = torch.stack([grad[r].mm(weight[r]) for r in r_range]) if need_h else None
        grad_w = torch.stack([grad[r].t().mm(h[r]) for r in r_range])
        grad_b = torch.stack([grad[r].sum(0) for r in r_range])
        return grad_h, grad_w, grad_b, None


class StackedNet(nn.Module):
    """R ``linear``/``mlp`` networks of equal shapes, trained as one.

    ``weights`` are the stacked tensors, in ``parameters()`` order of a replica's module
    (``layers.0.weight``, ``layers.0.bias``, ...); ``replicas[r]`` is replica r's module, whose
    parameters are views of ``weights[i][r]``. ``slopes[r]`` is replica r's Leaky-ReLU slope
    (None for the linear family).
    """

    def __init__(self, models: list[nn.Module], family: str, slopes: list[float | None], device: torch.device,
                 kernels: str):
        super().__init__()
        if family not in STACKABLE:
            raise ValueError(f"model family {family!r} cannot be stacked; stackable: {', '.join(STACKABLE)}")
        names = [name for name, _ in models[0].named_parameters()]
        for model in models[1:]:
            shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
            if shapes != [(n, tuple(models[0].get_parameter(n).shape)) for n in names]:
                raise ValueError("replicas of one batch must have equal parameter names and shapes")
        self.family, self.batched = family, kernels == "batched"
        self.weights = [torch.stack([m.get_parameter(n).detach() for m in models]).to(device).requires_grad_()
                        for n in names]
        # Kept out of the module tree: the stack, not the views, is what the forward reads.
        self.__dict__["replicas"] = [self._as_views(model, names, r) for r, model in enumerate(models)]
        self.replica_params = [list(m.parameters()) for m in self.replicas]
        self._activation = _activation(slopes, device) if family == "mlp" else None

    def _as_views(self, model: nn.Module, names: list[str], r: int) -> nn.Module:
        for i, name in enumerate(names):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, nn.Parameter(self.weights[i].detach()[r]))
        return model

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (R, B, C, H, W) -> logits (R, B, classes)."""
        h = x.flatten(2).contiguous()
        pairs = list(zip(self.weights[0::2], self.weights[1::2]))
        for i, (weight, bias) in enumerate(pairs):
            h = StackedLinear.apply(h, weight, bias, self.batched)
            if self._activation is not None and i < len(pairs) - 1:
                h = self._activation(h)
        return h

    def zero_grad(self, set_to_none: bool = True) -> None:
        for weight in self.weights:
            weight.grad = None
        for params in self.replica_params:
            for p in params:
                p.grad = None

    def share_grads(self) -> None:
        """Hand each replica's module the views of its gradients (its optimiser and clipping read them)."""
        for i, weight in enumerate(self.weights):
            for r, params in enumerate(self.replica_params):
                params[i].grad = weight.grad[r]

    def train(self, mode: bool = True):
        for model in self.replicas:
            model.train(mode)
        return super().train(mode)


def _activation(slopes: list[float], device: torch.device):
    """Leaky-ReLU with each replica's slope. One shared slope calls the single-run function
    itself; mixed slopes compute the same products with a slope per replica."""
    if len(set(slopes)) == 1:
        slope = slopes[0]
        return F.relu if slope == 0.0 else (lambda h: F.leaky_relu(h, slope))
    column = torch.tensor(slopes, dtype=torch.float32, device=device).view(-1, 1, 1)
    # Forward h > 0 ? h : h * p and, through autograd, backward g > 0 ? g : g * p: leaky_relu's own.
    return lambda h: torch.where(h > 0, h, h * column)


@torch.no_grad()
def evaluate_stacked(net: StackedNet, images: torch.Tensor, labels: torch.Tensor, manifest: dict,
                     batch_size: int = 1000) -> list[dict]:
    """Every replica's mean cross-entropy and accuracy on a clean split in one pass (one host
    synchronisation at the end); ``ImageClassification.evaluate``'s numbers, summed in another order."""
    from pipelines import normalize

    was_training = net.training
    net.eval()
    r_count = net.num_replicas
    device = net.weights[0].device
    loss_sum = torch.zeros(r_count, dtype=torch.float64, device=device)
    correct = torch.zeros(r_count, dtype=torch.int64, device=device)
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size], manifest)
        y = labels[start:start + batch_size]
        logits = net(x.unsqueeze(0).expand(r_count, *x.shape))
        losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(r_count), reduction="none")
        loss_sum += losses.view(r_count, -1).sum(1).double()
        correct += (logits.argmax(2) == y).sum(1)
    net.train(was_training)
    n = len(images)
    return [{"loss": loss / n, "accuracy": c / n, "error": 1.0 - c / n}
            for loss, c in zip(loss_sum.tolist(), correct.tolist())]
