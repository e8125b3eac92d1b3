"""The trainer serves the transformer studies: a language model on text, a ViT under PLATON,
a fixed mask (the lottery ticket), starting points pinned by content, and step budgets."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import small_config, state_equal
from lmc import paths


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shakes_tiny(results_root, tmp_path_factory):
    """The first 40,000 characters of tiny-shakespeare as a character-level text dataset."""
    from beton_builders import text
    from beton_fixtures import need

    src = tmp_path_factory.mktemp("corpus") / "shakes.txt"
    src.write_text((need("tinyshakespeare") / "input.txt").read_text()[:40000])
    return text.build(paths.beton_dir("shakes_tiny", results_root), src=src, tokenizer="char", stride=32,
                      name="shakes_tiny", progress=False)


@pytest.fixture(scope="module")
def cifar_small(results_root):
    """400 train / 200 test real CIFAR-10 images (the exact 5k subset's first images)."""
    from beton_builders.writer import write_arrays
    from beton_fixtures import need

    data = np.load(need("cifar10-subset-5k") / "cifar10_subset_5k.npz")
    out = {}
    for split, n in (("train", 400), ("test", 200)):
        beton = paths.beton_path("cifar_small", split, results_root)
        write_arrays(data[f"x_{split}"][:n], data[f"y_{split}"][:n].astype(np.int64), beton, dataset="cifar_small",
                     split=split, num_classes=10, sources=[], progress=False)
        out[split] = beton
    return out


def gpt_config(**overrides):
    from experiments.config import TrainConfig

    base = dict(dataset="shakes_tiny", model="gpt", block_size=16, width=32, depth=2, heads=2, augment="offset",
                optimizer="adamw", lr=3e-3, adam_beta2=0.95, weight_decay=0.1, schedule="cosine", min_lr=3e-4,
                warmup_steps=4, grad_clip=1.0, batch_size=16, micro_batches=2, epochs=2)
    base.update(overrides)
    return TrainConfig(**base)


def vit_config(**overrides):
    from experiments.config import TrainConfig

    base = dict(dataset="cifar_small", model="vit", kernel=8, depth=2, width=32, heads=2, mlp_ratio=2.0,
                augment="none", optimizer="adamw", lr=2e-3, batch_size=100, epochs=2)
    base.update(overrides)
    return TrainConfig(**base)


def final_state(run):
    from experiments.interpolate import load_final

    return load_final(run)[1]


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / paths.METRICS).read_text().splitlines()]


def test_a_language_model_pair_trains_resumes_and_interpolates(shakes_tiny, results_root, tmp_path):
    from experiments.interpolate import interpolate_runs
    from experiments.pairs import train_pair
    from experiments.training import train

    run_a, run_b = train_pair(gpt_config(), (1, 1), (2, 2), root=results_root, progress=False)
    metrics = rows(run_a)
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert metrics[-1]["test_loss"] < math.log((json.loads(
        paths.manifest_path(shakes_tiny["train"]).read_text())["vocab_size"]))  # better than uniform
    assert 0.0 <= metrics[-1]["test_acc"] <= 1.0 and "train_loss" in metrics[-1]
    _, bars = interpolate_runs(run_a, run_b, root=results_root, progress=False)
    assert set(bars.split) == {"train", "test"} and (bars.loss_barrier >= 0).all()
    assert (bars.error_barrier >= 0).all() and bars.acc_a.between(0, 1).all()

    # Bitwise resume of a text run: one epoch, stop, the rest.
    again = tmp_path / "again"
    shutil.copytree(paths.beton_dir("shakes_tiny", results_root), paths.beton_dir("shakes_tiny", again))
    cfg = gpt_config(order_seed=1, aug_seed=1)
    train(cfg, again, progress=False, stop_after_epochs=1)
    assert state_equal(final_state(train(cfg, again, progress=False)), final_state(run_a))


def test_gradient_accumulation_matches_one_full_batch_in_training(shakes_tiny, results_root):
    from experiments.training import train

    one = final_state(train(gpt_config(micro_batches=1, optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
                                       epochs=1, order_seed=3), results_root, progress=False))
    four = final_state(train(gpt_config(micro_batches=4, optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
                                        epochs=1, order_seed=3), results_root, progress=False))
    assert not state_equal(one, four)  # other summation order
    for key in one:
        torch.testing.assert_close(one[key], four[key], rtol=1e-4, atol=1e-5)


def test_a_step_budget_ends_with_a_partial_epoch(shakes_tiny, results_root):
    from experiments.training import task_for, train

    steps_per_epoch = task_for(gpt_config(), results_root).steps_per_epoch
    run = train(gpt_config(max_steps=steps_per_epoch + 3, order_seed=4), results_root, progress=False)
    logged = rows(run)
    assert [r["epoch"] for r in logged] == [1, 2]
    assert logged[-1]["step"] == steps_per_epoch + 3 and "train_loss" in logged[-1]
    assert (run / paths.DONE).read_text().split()[-1] == str(steps_per_epoch + 3)


def test_warm_up_in_steps_then_cosine_follows_its_closed_form():
    from experiments.training.schedules import schedule_for

    schedule = schedule_for(gpt_config(lr=6e-4, min_lr=6e-5, warmup_steps=10), steps_per_epoch=7, total_steps=110)
    assert schedule(0) == pytest.approx(6e-5) and schedule(4) == pytest.approx(3e-4)
    assert schedule(10) == pytest.approx(6e-4)
    assert schedule(109) == pytest.approx(6e-5)
    mid = 10 + (110 - 1 - 10) / 2
    assert schedule(int(mid)) == pytest.approx(6e-5 + 0.5 * (6e-4 - 6e-5) * (1 + math.cos(math.pi * (int(mid) - 10) / 99)))


def test_init_from_is_pinned_by_content(mnist_small, results_root, tmp_path):
    from experiments.training import task_for, train
    from experiments.training.builders import initial_model
    from experiments.training.initial import InitSourceError, pin

    source = train(small_config(epochs=1, order_seed=11), results_root, progress=False)
    cfg = pin(small_config(init_from=f"run:{source.name}", order_seed=12), results_root)
    assert len(cfg.init_from_sha256) == 64
    model, report = initial_model(cfg, task_for(cfg, results_root), results_root)
    assert state_equal(model.state_dict(), final_state(source)) and report["reinitialised"] == []
    run = train(cfg, results_root, progress=False)
    assert json.loads((run / paths.PROVENANCE).read_text())["init_from"]["sha256"] == cfg.init_from_sha256
    # Other weights, another run; weights that changed after pinning are refused.
    copy = tmp_path / "weights.pt"
    torch.save({k: v + 1 for k, v in final_state(source).items()}, copy)
    other = pin(small_config(init_from=str(copy), order_seed=12), results_root)
    assert other.run_name() != cfg.run_name()
    torch.save(final_state(source), copy)
    with pytest.raises(InitSourceError, match="changed since this run's config named it"):
        train(other, results_root, progress=False)
    with pytest.raises(InitSourceError, match="does not exist"):
        pin(small_config(init_from=str(tmp_path / "missing.pt")), results_root)


def test_the_pin_is_the_weights_not_the_file_so_equal_weights_name_equal_runs(mnist_small, results_root, tmp_path):
    """Two processes (or machines) that train the same source save the same weights in files whose
    other bytes may differ (torch's archive name, the numerics record); the pin, and so the run
    name, must only see the weights. A pin of the file's bytes, as runs made before carry, still resumes."""
    from experiments.training import checkpoints, train
    from experiments.training.initial import pin
    from lmc.config import replace
    from lmc.io import sha256_file

    source = train(small_config(epochs=1, order_seed=11), results_root, progress=False)
    cfg = pin(small_config(init_from=f"run:{source.name}", order_seed=12), results_root)
    state = final_state(source)
    # Our writer gives equal bytes for equal states wherever the file goes (no temporary name inside).
    checkpoints.save(tmp_path / "a.pt", {"model": state})
    checkpoints.save(tmp_path / "elsewhere.pt", {"model": state})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "elsewhere.pt").read_bytes()
    # Same weights under other metadata, written by plain torch.save: the same pin.
    torch.save({"model": state, "epoch": 99, "numerics": {"cpu": "another"}}, tmp_path / "b.pt")
    torch.save(state, tmp_path / "c.pt")
    for other in ("b.pt", "c.pt"):
        assert pin(small_config(init_from=str(tmp_path / other), order_seed=12)).init_from_sha256 == cfg.init_from_sha256
    state["0.weight" if "0.weight" in state else next(iter(state))] += 1e-6
    torch.save(state, tmp_path / "c.pt")
    assert pin(small_config(init_from=str(tmp_path / "c.pt"), order_seed=12)).init_from_sha256 != cfg.init_from_sha256
    legacy = replace(cfg, init_from_sha256=sha256_file(source / paths.FINAL))
    assert (train(legacy, results_root, progress=False) / paths.DONE).exists()


def test_platon_prunes_to_the_exact_ratio_resumes_bitwise_and_leaves_its_mask(cifar_small, results_root, tmp_path):
    from experiments.pruning.masks import Mask
    from experiments.training import checkpoints, train

    cfg = vit_config(prune="platon", prune_ratio=0.2, platon_delta_t=2, order_seed=1)
    run = train(cfg, results_root, progress=False)
    mask = Mask.from_state_dict(checkpoints.load(run / paths.MASK))
    assert mask.num_kept == round(0.2 * mask.num_total)
    state = final_state(run)
    assert all((state[name][~keep] == 0).all() for name, keep in mask.keep.items())
    assert rows(run)[-1]["density"] == pytest.approx(mask.density)

    again = tmp_path / "again"
    shutil.copytree(paths.beton_dir("cifar_small", results_root), paths.beton_dir("cifar_small", again))
    train(cfg, again, progress=False, stop_after_epochs=1)
    assert state_equal(final_state(train(cfg, again, progress=False)), state)


def test_a_fixed_mask_keeps_pruned_weights_at_zero_for_both_children(cifar_small, results_root):
    from experiments.interpolate import interpolate_runs
    from experiments.pairs import train_pair
    from experiments.pruning.masks import Mask
    from experiments.training import checkpoints, train
    from experiments.training.initial import pin

    source = train(vit_config(prune="platon", prune_ratio=0.2, platon_delta_t=2, order_seed=1), results_root,
                   progress=False)
    mask = Mask.from_state_dict(checkpoints.load(source / paths.MASK))
    cfg = pin(vit_config(prune="mask", mask_from=f"run:{source.name}", epochs=1), results_root)
    run_a, run_b = train_pair(cfg, (1, 1), (2, 2), root=results_root, progress=False)
    for run in (run_a, run_b):
        state = final_state(run)
        assert all((state[name][~keep] == 0).all() for name, keep in mask.keep.items())
        assert all((state[name][keep] != 0).any() for name, keep in mask.keep.items() if keep.any())  # kept ones live
    assert not state_equal(final_state(run_a), final_state(run_b))
    _, bars = interpolate_runs(run_a, run_b, root=results_root, progress=False)
    assert (bars.error_barrier >= 0).all() and (bars.loss_barrier >= 0).all()
