"""PLATON and masks: the schedule's closed form, the EMAs by hand, exact sparsity (ties included),
masks that stay put under SGD+momentum and AdamW, bitwise resume, and the refusals."""
from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from experiments.models import build_model
from experiments.models.vit import ViT, ViTConfig
from experiments.pruning import (Mask, MaskHook, Platon, PlatonConfig, PruningError, keep_count, magnitude_mask,
                                 prunable_parameters, remaining_ratio, select_global)

TINY = ViTConfig((3, 8, 8), 4, patch=4, depth=2, width=8, heads=2)  # 2 x (4*8*8 + 2*8*32) = 1536 prunable


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class State:
    """What the trainer hands its hooks."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0


def tiny_vit(seed: int = 0) -> ViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViT(TINY)


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)


def train(state: State, hooks: list, steps: int, *, check=None) -> None:
    """The trainer's step, hooks at its fixed points; ``step`` counts optimiser steps taken."""
    for _ in range(steps):
        if any(h.before_step(state) for h in hooks):
            return
        x, y = batch(state.step)
        state.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(state.model(x), y).backward()
        for h in hooks:
            h.after_backward(state)
        state.optimizer.step()
        state.step += 1
        for h in hooks:
            h.after_step(state)
        if check is not None:
            check(state)


def prunable_values(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in prunable_parameters(model).values()])


# --- the schedule --------------------------------------------------------------------------

def test_schedule_matches_its_closed_form():
    # T = 100, t_i = 10, t_f = 20, r0 = 1, rT = 0.2: cubic over the 70 steps 10 < t <= 80.
    r = lambda t: remaining_ratio(t, 100, 10, 20, 1.0, 0.2)  # noqa: E731
    assert r(0) == r(10) == 1.0
    assert r(11) == pytest.approx(0.2 + 0.8 * (69 / 70) ** 3)
    assert r(45) == pytest.approx(0.2 + 0.8 * 0.5 ** 3) == pytest.approx(0.3)
    assert r(66) == pytest.approx(0.2 + 0.8 * 0.2 ** 3)
    assert r(80) == pytest.approx(0.2) and r(81) == r(100) == 0.2
    values = [r(t) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:])), "the remaining ratio never grows"


def test_platon_converts_warmups_and_masks_on_its_grid():
    platon = Platon(tiny_vit(), PlatonConfig(final_ratio=0.5, delta_t=10, initial_warmup=0.1, final_warmup=0.2), 95)
    assert (platon.initial_warmup_steps, platon.final_warmup_steps) == (10, 19)  # round(9.5) = 10 (to even)
    mask_steps = [t for t in range(1, 96) if platon.is_mask_step(t)]
    # every ΔT in the cubic phase, every step after T - t_f = 76
    assert mask_steps == [20, 30, 40, 50, 60, 70, *range(77, 96)]
    assert platon.remaining_ratio(45) == pytest.approx(0.5 + 0.5 * (1 - 35 / 66) ** 3)


def test_the_last_step_always_masks():
    platon = Platon(tiny_vit(), PlatonConfig(final_ratio=0.5, delta_t=7, initial_warmup=0.0, final_warmup=0.0), 30)
    assert platon.is_mask_step(30) and not platon.is_mask_step(29) and platon.remaining_ratio(30) == 0.5


# --- the scores, by hand -------------------------------------------------------------------

class TwoMatrices(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 4.0]]))
        self.b = nn.Parameter(torch.tensor([3.0, -1.0, 0.25]))

    def prunable_names(self):
        return ("a", "b")


def feed(platon: Platon, model: TwoMatrices, grads: dict, step: int) -> None:
    for name, g in grads.items():
        getattr(model, name).grad = None if g is None else torch.tensor(g)
    platon.observe(model, step)


def test_platon_emas_match_a_hand_computation_per_step():
    model = TwoMatrices()
    platon = Platon(model, PlatonConfig(delta_t=1, beta1=0.85, beta2=0.95, initial_warmup=0.0), 10)
    feed(platon, model, {"a": [[0.1, 0.2], [-1.0, 0.0]], "b": [1.0, 1.0, 4.0]}, 1)
    # I = |θ ⊙ ∇| = [[0.1, 0.4], [0.5, 0]]; Ī = 0.15 I; Ū = 0.05 |I - Ī| = 0.05 * 0.85 I
    torch.testing.assert_close(platon.exp_avg_ipt["a"], torch.tensor([[0.015, 0.06], [0.075, 0.0]]))
    torch.testing.assert_close(platon.exp_avg_unc["a"], torch.tensor([[0.00425, 0.017], [0.02125, 0.0]]))
    torch.testing.assert_close(platon.exp_avg_ipt["b"], torch.tensor([0.45, 0.15, 0.15]))
    # Step 2 on "a": I = |[[1, -2], [0.5, 4]] * [[0.3, 0], [0, -0.1]]| = [[0.3, 0], [0, 0.4]]
    feed(platon, model, {"a": [[0.3, 0.0], [0.0, -0.1]], "b": None}, 2)
    ipt = torch.tensor([[0.3, 0.0], [0.0, 0.4]])
    i_bar = 0.85 * torch.tensor([[0.015, 0.06], [0.075, 0.0]]) + 0.15 * ipt
    u_bar = 0.95 * torch.tensor([[0.00425, 0.017], [0.02125, 0.0]]) + 0.05 * (ipt - i_bar).abs()
    torch.testing.assert_close(platon.exp_avg_ipt["a"], i_bar)
    torch.testing.assert_close(platon.exp_avg_unc["a"], u_bar)
    torch.testing.assert_close(platon.scores()["a"], i_bar * u_bar)
    # "b" had no gradient at step 2: skipped, not a crash, its scores unchanged.
    torch.testing.assert_close(platon.exp_avg_ipt["b"], torch.tensor([0.45, 0.15, 0.15]))


def test_platon_averages_the_importance_over_its_window():
    model = TwoMatrices()
    platon = Platon(model, PlatonConfig(delta_t=2, beta1=0.5, beta2=0.5, initial_warmup=0.0), 10)
    feed(platon, model, {"a": [[1.0, 0.0], [0.0, 0.0]], "b": [0.0, 0.0, 0.0]}, 1)
    assert platon.exp_avg_ipt["a"].abs().sum() == 0  # window still open at t = 1
    feed(platon, model, {"a": [[3.0, 0.0], [0.0, 0.0]], "b": [0.0, 0.0, 0.0]}, 2)
    # window mean of |θ ∇| for a[0, 0]: (1 + 3) / 2 = 2; Ī = 0.5 * 2 = 1; Ū = 0.5 * |2 - 1| = 0.5
    assert platon.exp_avg_ipt["a"][0, 0].item() == 1.0 and platon.exp_avg_unc["a"][0, 0].item() == 0.5


# --- exact sparsity, ties, persistence -----------------------------------------------------

def test_select_global_keeps_exactly_k_and_breaks_ties_by_position():
    scores = {"x": torch.ones(2, 3), "y": torch.ones(4)}
    mask = select_global(scores, 7)
    assert mask.num_kept == 7 and mask.keep["x"].all() and mask.keep["y"].tolist() == [True, False, False, False]
    scores = {"x": torch.tensor([0.5, 2.0, 0.5]), "y": torch.tensor([1.0, 0.5])}
    mask = select_global(scores, 3)
    assert mask.keep["x"].tolist() == [True, True, False] and mask.keep["y"].tolist() == [True, False]
    # A mask only shrinks: an entry pruned before is not revived, whatever its score.
    alive = Mask({"x": torch.tensor([True, False, True]), "y": torch.tensor([True, True])})
    shrunk = select_global(scores, 2, alive=alive)
    assert shrunk.keep["x"].tolist() == [True, False, False] and shrunk.keep["y"].tolist() == [True, False]


@pytest.mark.parametrize("ratio", [0.2, 0.05, 1e-9])
def test_magnitude_mask_is_exact_even_when_all_weights_are_equal(ratio):
    model = tiny_vit()
    with torch.no_grad():
        for p in prunable_parameters(model).values():
            p.fill_(0.5)
    mask = magnitude_mask(model, ratio)
    assert mask.num_total == 1536 and mask.num_kept == keep_count(ratio, 1536) == round(ratio * 1536)
    assert magnitude_mask(model, ratio).flat().equal(mask.flat())  # the same choice every time


def test_magnitude_mask_keeps_the_largest_weights():
    model = tiny_vit(3)
    mask = magnitude_mask(model, 0.1)
    values = prunable_values(model).abs()
    kept = values[mask.flat()]
    assert kept.min() >= values[~mask.flat()].max() and mask.num_kept == round(0.1 * 1536)


def test_platon_reaches_the_exact_final_sparsity_and_pruned_weights_stay_zero():
    model = tiny_vit()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    platon = Platon(model, PlatonConfig(final_ratio=0.2, delta_t=3, initial_warmup=0.1, final_warmup=0.2), 40)
    history = []

    def check(state):
        keep = platon.mask.flat()
        values = prunable_values(state.model)
        assert (values[~keep] == 0).all() and not torch.signbit(values[~keep]).any(), "pruned weights must be +0.0"
        history.append(keep.clone())

    train(State(model, opt), [platon], 40, check=check)
    assert platon.mask.num_kept == keep_count(0.2, 1536) == 307
    assert all((~a | b).all() for a, b in zip(history[1:], history)), "a pruned weight never comes back"
    assert history[3].all() and not history[-1].all()  # dense during the initial warm-up
    assert (prunable_values(model) != 0).sum() == 307  # survivors trained on (none hit exactly 0)
    # Optimiser state of pruned entries is zero too.
    for name, p in prunable_parameters(model).items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert (opt.state[p][key][~platon.mask.keep[name]] == 0).all()


def test_platon_with_all_scores_tied_still_hits_the_exact_count():
    """All prunable weights zero and lr 0: every score is 0, and the count must still be exact."""
    model = tiny_vit()
    with torch.no_grad():
        for p in prunable_parameters(model).values():
            p.zero_()
    platon = Platon(model, PlatonConfig(final_ratio=0.05, delta_t=2, initial_warmup=0.0, final_warmup=0.1), 20)
    train(State(model, torch.optim.SGD(model.parameters(), lr=0.0)), [platon], 20)
    assert platon.scores()["blocks.0.attn.query.weight"].abs().sum() == 0
    assert platon.mask.num_kept == keep_count(0.05, 1536) == 77
    assert platon.mask.flat().nonzero().flatten().tolist() == list(range(77))  # ties: the first entries


def test_a_count_to_keep_of_zero_empties_the_mask_without_crashing():
    model = tiny_vit()
    platon = Platon(model, PlatonConfig(final_ratio=1e-6, delta_t=1, initial_warmup=0.0, final_warmup=0.5), 6)
    train(State(model, torch.optim.SGD(model.parameters(), lr=0.1)), [platon], 6)
    assert platon.mask.num_kept == 0 and (prunable_values(model) == 0).all()
    assert torch.isfinite(model(batch(0)[0])).all()


def test_a_frozen_matrix_is_left_alone():
    model = tiny_vit()
    frozen = model.blocks[0].mlp.fc1.weight
    frozen.requires_grad_(False)
    before = frozen.clone()
    platon = Platon(model, PlatonConfig(final_ratio=0.3, delta_t=2, initial_warmup=0.0, final_warmup=0.2), 12)
    assert "blocks.0.mlp.fc1.weight" not in platon.names and platon.mask.num_total == 1536 - 256
    train(State(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)), [platon], 12)
    assert torch.equal(frozen, before) and platon.mask.num_kept == keep_count(0.3, 1280)


@pytest.mark.parametrize("make_optimizer", [
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.05),
], ids=["sgd_momentum", "sgd_nesterov", "adamw"])
def test_a_fixed_mask_persists_over_steps_with_warm_optimizer_state(make_optimizer):
    model = tiny_vit()
    opt = make_optimizer(model.parameters())
    state = State(model, opt)
    train(state, [], 3)  # dense steps first: momentum / Adam moments are non-zero everywhere
    mask = magnitude_mask(model, 0.3)
    hook = MaskHook(mask)
    flat_pruned = ~mask.flat()

    def check(s):
        assert (prunable_values(s.model)[flat_pruned] == 0).all()

    train(state, [hook], 5, check=check)
    assert (prunable_values(model)[~flat_pruned] != 0).all()

    # The test can fail: masking gradients alone leaves stale optimiser state that moves the weights.
    class GradsOnly(MaskHook):
        def after_step(self, s):
            pass

    model2 = tiny_vit()
    opt2 = make_optimizer(model2.parameters())
    state2 = State(model2, opt2)
    train(state2, [], 3)
    leaky = GradsOnly(magnitude_mask(model2, 0.3))
    train(state2, [leaky], 2)
    assert (prunable_values(model2)[~leaky.mask.flat()] != 0).any()


def test_platon_resumes_bit_for_bit():
    cfg = PlatonConfig(final_ratio=0.1, delta_t=3, initial_warmup=0.1, final_warmup=0.2)

    def fresh():
        model = tiny_vit(7)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        return State(model, opt), Platon(model, cfg, 30)

    straight, platon = fresh()
    train(straight, [platon], 30)

    first, platon_a = fresh()
    train(first, [platon_a], 13)  # stop mid-window, mid-schedule
    buf = io.BytesIO()
    torch.save({"model": first.model.state_dict(), "opt": first.optimizer.state_dict(),
                "platon": platon_a.state_dict(), "step": first.step}, buf)
    train(first, [platon_a], 2)  # the live objects move on: the checkpoint must not
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    resumed, platon_b = fresh()
    resumed.model.load_state_dict(ckpt["model"])
    resumed.optimizer.load_state_dict(ckpt["opt"])
    platon_b.load_state_dict(ckpt["platon"])
    resumed.step = ckpt["step"]
    train(resumed, [platon_b], 17)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(platon.mask.flat(), platon_b.mask.flat()) and platon.mask.num_kept == keep_count(0.1, 1536)
    sa, sb = platon.state_dict(), platon_b.state_dict()
    assert all(torch.equal(sa["exp_avg_unc"][n], sb["exp_avg_unc"][n]) for n in platon.names)


def test_mask_state_dict_round_trip_and_density():
    mask = magnitude_mask(tiny_vit(), 0.25)
    buf = io.BytesIO()
    torch.save(mask.state_dict(), buf)
    buf.seek(0)
    again = Mask.from_state_dict(torch.load(buf))
    assert torch.equal(again.flat(), mask.flat()) and again.density == mask.density == 384 / 1536
    assert set(mask.densities()) == set(tiny_vit().prunable_names())
    other = Mask.dense({"x": torch.zeros(3)})
    with pytest.raises(PruningError, match="saved mask covers 12 matrices"):
        other.load_state_dict(mask.state_dict())


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, expected", [
    (dict(final_ratio=0.0), "final_ratio (the remaining ratio rT) must lie in (0, 1]"),
    (dict(final_ratio=1.5), "must lie in (0, 1]"),
    (dict(final_ratio=0.5, initial_ratio=0.4), "final_ratio=0.5 exceeds initial_ratio=0.4"),
    (dict(beta1=1.0), "beta1 must lie in [0, 1)"),
    (dict(delta_t=0), "delta_t must be an integer >= 1"),
    (dict(initial_warmup=0.5, final_warmup=0.5), "make their sum < 1"),
])
def test_bad_platon_configs_are_one_line_user_errors(kwargs, expected):
    with pytest.raises(PruningError) as err:
        PlatonConfig(**kwargs)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_models_without_prunable_matrices_are_refused():
    mlp = build_model("mlp", (3, 32, 32), 10, width=16)
    with pytest.raises(PruningError, match="model MLP has no prunable matrices .* use model 'vit'"):
        Platon(mlp, PlatonConfig(), 100)
    with pytest.raises(PruningError, match="no prunable matrices"):
        magnitude_mask(mlp, 0.2)
    with pytest.raises(PruningError, match=r"remaining ratio must lie in \(0, 1\]"):
        magnitude_mask(tiny_vit(), 0)
    with pytest.raises(PruningError, match="fill all 4 training steps"):
        Platon(tiny_vit(), PlatonConfig(initial_warmup=0.5, final_warmup=0.4), 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_platon_on_cuda_is_deterministic_and_exact():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        masks = []
        for _ in range(2):
            model = tiny_vit().cuda()
            platon = Platon(model, PlatonConfig(final_ratio=0.1, delta_t=2, initial_warmup=0.0), 12)
            state = State(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
            for _ in range(12):
                x, y = batch(state.step)
                state.optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x.cuda()), y.cuda()).backward()
                platon.after_backward(state)
                state.optimizer.step()
                state.step += 1
                platon.after_step(state)
            masks.append(platon.mask.flat().cpu())
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(masks[0], masks[1]) and int(masks[0].sum()) == keep_count(0.1, 1536)
