"""Permutation symmetries of the model families, and weight matching (Ainsworth et al. 2023).

Reordering a layer's hidden units (rows of the weight into them, their biases, columns of the
weight out of them) leaves the network's function unchanged, because the activation acts unit
by unit (ReLU, Leaky-ReLU, none). A :class:`PermutationSpec` lists, for each weight of a
family, which permutation acts on which of its axes. Weight matching then looks for the
permutations π that make run B's weights closest to run A's,

    maximise  Σ_weights ⟨W_a, π(W_b)⟩   (equivalently, minimise ‖Θ_A − π(Θ_B)‖²),

by coordinate descent: one permutation at a time, the others held fixed, each step a linear
assignment problem, ``A = Σ W_a · (W_b with its other axes permuted)ᵀ`` solved exactly with
``scipy.optimize.linear_sum_assignment(A, maximize=True)``. The order of the visits is
shuffled every sweep from a seed (``lmc.seeds``, purpose "align"); the search stops after the
first sweep that gains no more than 1e-12, or after 100 sweeps.

Convention: a permutation ``p`` of ``n`` units maps ``w`` to ``w'[i] = w[p[i]]`` along its axis.
So if B is A with its units reordered by σ, matching B to A finds σ's inverse.

Families: ``linear`` and ``mlp`` (every hidden layer), ``toeplitz_mlp`` (its Co·H'·W' hidden
units), ``cnn`` (the Co channels, shared by every position) and ``lc_cnn`` (the Co channels,
permuted independently at each position: an LC-CNN shares no kernel between positions, so that
larger group is a symmetry too). Add a family with :func:`register` and, for a transformer's
MLP block (fc_in -> activation -> fc_out), :func:`hidden_units` (see its docstring).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lmc import seeds
from lmc.errors import UserError

MAX_SWEEPS = 100
MIN_GAIN = 1e-12


class NotPermutableError(UserError):
    """A model family without a permutation spec (or without hidden units to permute)."""


@dataclass(frozen=True)
class Perm:
    """``size`` units permuted together; ``groups`` > 1: one independent permutation per group
    (the LC-CNN's positions). In every view it touches, a grouped permutation's axis is followed
    by the group axis."""
    size: int
    groups: int = 1


@dataclass(frozen=True)
class Weight:
    """How one state-dict tensor is seen: reshaped to ``view``, with ``axes[i]`` the name of the
    permutation acting on view axis i (None: not permuted)."""
    view: tuple[int, ...]
    axes: tuple[str | None, ...]


@dataclass(frozen=True)
class PermutationSpec:
    perms: dict[str, Perm]
    weights: dict[str, Weight]
    touches: dict[str, list[tuple[str, int]]] = field(init=False)

    def __post_init__(self):
        touches: dict[str, list[tuple[str, int]]] = {name: [] for name in self.perms}
        for key, w in self.weights.items():
            if len(w.view) != len(w.axes):
                raise ValueError(f"{key}: view {w.view} and axes {w.axes} differ in length")
            for axis, name in enumerate(w.axes):
                if name is None:
                    continue
                perm = self.perms[name]
                grouped_ok = perm.groups == 1 or (axis + 1 < len(w.view) and w.view[axis + 1] == perm.groups)
                if w.view[axis] != perm.size or not grouped_ok:
                    raise ValueError(f"{key}: axis {axis} of view {w.view} does not fit permutation {name} {perm}")
                touches[name].append((key, axis))
        unused = [name for name, t in touches.items() if not t]
        if unused:
            raise ValueError(f"permutation(s) {unused} act on no weight")
        object.__setattr__(self, "touches", touches)

    def check(self, state: Mapping[str, torch.Tensor]) -> None:
        """Every weight of the spec is in ``state`` with as many elements as its view."""
        for key, w in self.weights.items():
            if key not in state or state[key].numel() != int(np.prod(w.view)):
                found = tuple(state[key].shape) if key in state else "missing"
                raise ValueError(f"state tensor {key!r} ({found}) does not fit the spec's view {w.view}")


Perms = dict[str, np.ndarray]  # name -> (groups, size) int array


def identity(spec: PermutationSpec) -> Perms:
    return {name: np.tile(np.arange(p.size), (p.groups, 1)) for name, p in spec.perms.items()}


def random_perms(spec: PermutationSpec, rng: np.random.Generator) -> Perms:
    return {name: np.stack([rng.permutation(p.size) for _ in range(p.groups)]) for name, p in spec.perms.items()}


def inverse(perms: Perms) -> Perms:
    return {name: np.argsort(p, axis=1) for name, p in perms.items()}


# -- permuting tensors ----------------------------------------------------------------------

def _permute_axis(w: torch.Tensor, axis: int, perm: np.ndarray) -> torch.Tensor:
    """``w'[.., i, ..] = w[.., perm[i], ..]`` along ``axis``; grouped: per index of axis + 1."""
    index = torch.as_tensor(perm, dtype=torch.long, device=w.device)
    if index.shape[0] == 1:
        return w.index_select(axis, index[0])
    x = w.movedim((axis, axis + 1), (0, 1))
    index = index.T.reshape(*index.T.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 0, index).movedim((0, 1), (axis, axis + 1))


def _permuted_view(spec: PermutationSpec, perms: Perms, key: str, tensor: torch.Tensor,
                   skip_axis: int | None = None) -> torch.Tensor:
    w = spec.weights[key]
    out = tensor.reshape(w.view)
    for axis, name in enumerate(w.axes):
        if name is not None and axis != skip_axis:
            out = _permute_axis(out, axis, perms[name])
    return out


def apply(spec: PermutationSpec, perms: Perms, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """π(state): every weight of the spec permuted, the rest copied; same keys, shapes, dtypes."""
    spec.check(state)
    return {key: (_permuted_view(spec, perms, key, t).reshape(t.shape).contiguous() if key in spec.weights
                  else t.clone()) for key, t in state.items()}


# -- weight matching ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Matching:
    perms: Perms
    gains: list[float]  # per sweep: how much Σ⟨W_a, π(W_b)⟩ grew (the last is ≤ MIN_GAIN when converged)
    converged: bool

    @property
    def sweeps(self) -> int:
        """Sweeps that changed the permutations (the confirming last sweep is not counted)."""
        return sum(g > MIN_GAIN for g in self.gains)


def _cost(w_a: torch.Tensor, w_b: torch.Tensor, axis: int, perm: Perm) -> torch.Tensor:
    """(groups, n, n): A[g, i, j] = ⟨unit i of W_a, unit j of W_b⟩ within group g."""
    if perm.groups == 1:
        a = w_a.movedim(axis, 0).reshape(perm.size, 1, -1)
        b = w_b.movedim(axis, 0).reshape(perm.size, 1, -1)
    else:
        a = w_a.movedim((axis, axis + 1), (0, 1)).reshape(perm.size, perm.groups, -1)
        b = w_b.movedim((axis, axis + 1), (0, 1)).reshape(perm.size, perm.groups, -1)
    return torch.einsum("igr,jgr->gij", a, b)


def weight_matching(spec: PermutationSpec, state_a: Mapping[str, torch.Tensor],
                    state_b: Mapping[str, torch.Tensor], *, seed: int = 0, max_sweeps: int = MAX_SWEEPS,
                    min_gain: float = MIN_GAIN) -> Matching:
    """The permutations of B's units that maximise Σ⟨W_a, π(W_b)⟩ (coordinate descent, float64)."""
    spec.check(state_a)
    spec.check(state_b)
    a = {k: state_a[k].detach().to("cpu", torch.float64).reshape(w.view) for k, w in spec.weights.items()}
    b = {k: state_b[k].detach().to("cpu", torch.float64).reshape(w.view) for k, w in spec.weights.items()}
    perms = identity(spec)
    names = sorted(spec.perms)
    gains, converged = [], False
    for sweep in range(max_sweeps):
        rng = np.random.default_rng(seeds.derive(seed, "align", sweep))
        gained = 0.0
        for name in (names[i] for i in rng.permutation(len(names))):
            perm = spec.perms[name]
            cost = sum(_cost(a[key], _permuted_view(spec, perms, key, b[key], skip_axis=axis), axis, perm)
                       for key, axis in spec.touches[name]).numpy()
            rows = np.arange(perm.size)
            new = np.stack([linear_sum_assignment(c, maximize=True)[1] for c in cost])
            old_score = sum(c[rows, p].sum() for c, p in zip(cost, perms[name]))
            new_score = sum(c[rows, p].sum() for c, p in zip(cost, new))
            # Only a strict gain moves a permutation: ties never churn, so the search must stop.
            if new_score - old_score > min_gain:
                perms[name] = new
                gained += float(new_score - old_score)
        gains.append(gained)
        if gained <= min_gain:
            converged = True
            break
    return Matching(perms, gains, converged)


# -- the families' specs ----------------------------------------------------------------------

SpecBuilder = Callable[[Mapping[str, torch.Tensor]], PermutationSpec]
_SPECS: dict[str, SpecBuilder] = {}


def register(family: str) -> Callable[[SpecBuilder], SpecBuilder]:
    """Declare the permutation spec of a model family (a function of its state dict's shapes)."""
    def add(builder: SpecBuilder) -> SpecBuilder:
        _SPECS[family] = builder
        return builder
    return add


def permutable_families() -> tuple[str, ...]:
    return tuple(_SPECS)


def spec_for(family: str, state: Mapping[str, torch.Tensor]) -> PermutationSpec:
    if family not in _SPECS:
        raise NotPermutableError(
            f"model family {family!r} has no permutation spec, so it cannot be aligned; "
            f"alignable families: {', '.join(_SPECS)}")
    spec = _SPECS[family](state)
    spec.check(state)
    return spec


def hidden_units(perms: dict, weights: dict, name: str, state: Mapping[str, torch.Tensor],
                 fan_in: str, fan_out: str) -> None:
    """Add permutation ``name`` over the hidden units between two ``nn.Linear`` layers:
    the rows of ``<fan_in>.weight`` and ``<fan_in>.bias``, the columns of ``<fan_out>.weight``.

    This is all a transformer's MLP block needs (``fc_in -> GELU -> fc_out``, inside the residual
    stream, which stays unpermuted): a ViT or GPT family registers a spec that calls it once per
    block, e.g. ``hidden_units(p, w, f"P_mlp{i}", state, f"blocks.{i}.mlp.fc1", f"blocks.{i}.mlp.fc2")``.
    """
    size = state[f"{fan_in}.weight"].shape[0]
    perms[name] = Perm(size)
    _mark(weights, f"{fan_in}.weight", state, 0, name)
    if f"{fan_in}.bias" in state:
        _mark(weights, f"{fan_in}.bias", state, 0, name)
    _mark(weights, f"{fan_out}.weight", state, 1, name)


def _mark(weights: dict, key: str, state: Mapping[str, torch.Tensor], axis: int, name: str) -> None:
    """Permutation ``name`` acts on ``axis`` of ``key``, beside those already marked (a hidden
    layer's weight is the fan-out of the units before it and the fan-in of those after it)."""
    shape = tuple(state[key].shape)
    axes = list(weights[key].axes) if key in weights else [None] * len(shape)
    axes[axis] = name
    weights[key] = Weight(shape, tuple(axes))


@register("linear")
@register("mlp")
def _layers_spec(state) -> PermutationSpec:
    depth = sum(1 for k in state if k.startswith("layers.") and k.endswith(".weight"))
    if depth < 2:
        raise NotPermutableError("a 1-layer linear model (logistic regression) has no hidden units to permute; "
                                 "alignment needs depth >= 2")
    perms, weights = {}, {}
    for i in range(depth - 1):
        hidden_units(perms, weights, f"P_{i}", state, f"layers.{i}", f"layers.{i + 1}")
    return PermutationSpec(perms, weights)


@register("toeplitz_mlp")
def _toeplitz_mlp_spec(state) -> PermutationSpec:
    perms, weights = {}, {}
    hidden_units(perms, weights, "P_hidden", state, "hidden", "classifier")
    return PermutationSpec(perms, weights)


def _channels_spec(state, per_position: bool) -> PermutationSpec:
    """cnn: hidden.weight (Co, Ci, k, k); lc_cnn: (Co, H', W', Ci, k, k). Both feed the classifier
    channel-major (Conv2d(...).flatten(1)): its columns are (channel, position)."""
    hidden = state["hidden.weight"]
    channels = hidden.shape[0]
    classes, features = state["classifier.weight"].shape
    positions = features // channels
    perm = Perm(channels, positions if per_position else 1)
    if per_position:
        weights = {"hidden.weight": Weight((channels, positions, hidden[0, 0, 0].numel()), ("P_channels", None, None)),
                   "hidden.bias": Weight((channels, positions), ("P_channels", None))}
    else:
        weights = {"hidden.weight": Weight((channels, hidden[0].numel()), ("P_channels", None)),
                   "hidden.bias": Weight((channels,), ("P_channels",))}
    weights["classifier.weight"] = Weight((classes, channels, positions), (None, "P_channels", None))
    return PermutationSpec({"P_channels": perm}, weights)


register("cnn")(lambda state: _channels_spec(state, per_position=False))
register("lc_cnn")(lambda state: _channels_spec(state, per_position=True))
