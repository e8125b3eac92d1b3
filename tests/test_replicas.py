"""The replica engine: R runs trained as one stacked network equal the same runs trained alone.

Every comparison is against ``train()`` of the same config on the same results layout:
bitwise (weights, optimiser state, metrics rows but their seconds, loader digests) with the
per-replica kernels the CPU uses, within a stated tolerance with the batched kernels a GPU uses.
"""
from __future__ import annotations

import json
import math
import shutil
import threading
import time

import pytest
import torch

from conftest import small_config, state_equal
from lmc import paths

# Three replicas that differ in everything a replica may keep apart: init, order and augmentation
# seeds, learning rate, warm-up, momentum, weight decay, clipping, Leaky-ReLU slope, schedule.
SGD = [small_config(lr=0.02, order_seed=1, aug_seed=1),
       small_config(lr=0.05, order_seed=2, aug_seed=3, warmup_epochs=1, grad_clip=0.5, slope=0.1),
       small_config(lr=0.01, init_seed=1, order_seed=3, aug_seed=2, momentum=0.5, weight_decay=1e-3)]
ADAM = [small_config(model="linear", depth=3, optimizer="adam", lr=0.005, order_seed=1, aug_seed=1),
        small_config(model="linear", depth=3, optimizer="adam", lr=0.001, order_seed=2, aug_seed=3, warmup_epochs=1,
                     schedule="cosine"),
        small_config(model="linear", depth=3, optimizer="adam", lr=0.002, init_seed=1, adam_beta2=0.99, grad_clip=1.0)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine, torch's second thread spins more than it
    computes (3x slower here). Replicas and single runs compare at the same thread count either way
    (the bitwise claims hold at 2 threads too: benchmarks/bench_replicas.py checks them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fresh(tmp_path, name="results"):
    root = tmp_path / name
    shutil.copytree(paths.beton_dir("mnist_small"), paths.beton_dir("mnist_small", root))
    return root


@pytest.fixture
def root(mnist_small, tmp_path):
    return fresh(tmp_path)


@pytest.fixture(scope="module")
def alone(mnist_small, tmp_path_factory):
    """Each config trained alone by the single-run trainer, once per module: cfg -> run directory."""
    from experiments.training import train

    ref = fresh(tmp_path_factory.mktemp("alone"))
    return lambda cfg: train(cfg, ref, device="cpu", progress=False)


def final(run) -> dict:
    from experiments.interpolate import load_final

    return load_final(run)[1]


def rows(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / paths.METRICS).read_text().splitlines()]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    def same(x, y):
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b))


def last_checkpoint(run) -> dict:
    from experiments.training import checkpoints

    return checkpoints.load(checkpoints.epoch_checkpoints(run)[-1])


def assert_bitwise_alone(run, single) -> None:
    assert state_equal(final(run), final(single)), run.name
    assert same_rows(rows(run), rows(single)), run.name
    assert (run / paths.DIGEST).read_text() == (single / paths.DIGEST).read_text()
    mine, theirs = last_checkpoint(run), last_checkpoint(single)
    assert state_equal(mine["model"], theirs["model"])
    for key, state in theirs["optimizer"]["state"].items():
        assert state_equal(mine["optimizer"]["state"][key], state)
    assert mine["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]


@pytest.mark.parametrize("cfgs", [SGD, ADAM], ids=["sgd-mlp", "adam-linear"])
def test_replicas_equal_their_single_runs_bitwise(root, alone, cfgs):
    from experiments.training import train_replicas
    from pipelines import loader_digest

    runs = train_replicas(cfgs, root, device="cpu", progress=False)
    for cfg, run in zip(cfgs, runs):
        assert_bitwise_alone(run, alone(cfg))
        prov = json.loads((run / paths.PROVENANCE).read_text())
        assert prov["trained_in"] == "a batch of 3" and prov["batches"][0]["kernels"] == "per-replica"
        assert prov["device"] == "cpu"
        assert sorted(p.name for p in (run / paths.CHECKPOINTS).glob("*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    # The digest a replica records is `lmc loader digest`'s, computed through the FFCV loader.
    cfg = cfgs[1]
    expected = loader_digest(paths.beton_path("mnist_small", "train", root), order_seed=cfg.order_seed,
                             aug_seed=cfg.aug_seed, augment=cfg.augment, epochs=2, batch_size=cfg.batch_size)
    assert json.loads((runs[1] / paths.DIGEST).read_text())["epochs"] == expected
    # A replica's checkpoint holds its own weights, not the whole stack (views are copied out).
    sizes = [(run / paths.FINAL).stat().st_size for run in (runs[0], alone(cfgs[0]))]
    assert sizes[0] == sizes[1]


def test_batched_kernels_stay_within_tolerance_and_give_the_same_barrier_table(root, alone):
    """The GPU's kernels (baddbmm/bmm, a stacked loss, one evaluation pass), run on the CPU."""
    from experiments.interpolate import interpolate_runs
    from experiments.pairs import child_configs
    from experiments.training import train_replicas

    pair = child_configs(small_config(optimizer="adam", lr=0.005), (1, 1), (2, 2))
    runs = train_replicas(list(pair), root, device="cpu", progress=False, kernels="batched")
    singles = [alone(cfg) for cfg in pair]
    for run, single in zip(runs, singles):
        a, b = final(run), final(single)
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        # MKL's batched products sum like its single ones on one thread, not on two (1e-8 after
        # these 38 steps); cuBLAS's differ more. The bound catches a wrong kernel, not rounding.
        assert worst < 1e-5, worst
    tables = []
    for a, b in (runs, singles):
        _, barriers = interpolate_runs(a, b, root=root, device="cpu", write=False, progress=False)
        tables.append(barriers.set_index("split").error_barrier_pct.round(2).to_dict())
    assert tables[0] == tables[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_batch_is_reproducible_and_close_to_its_single_runs(tmp_path, mnist_small):
    """cuBLAS's batched products are not its single ones: close, not bitwise; but a batch is
    bitwise reproducible, and a diverging replica stays in its slice there too."""
    from experiments.training import train, train_replicas

    cfgs = [*SGD[:2], small_config(lr=1e6, order_seed=5, aug_seed=5), *ADAM[:1]]
    first, again = (train_replicas(cfgs, fresh(tmp_path, name), device="cuda", progress=False)
                    for name in ("a", "b"))
    singles = [train(cfg, fresh(tmp_path, f"s{i}"), device="cuda", progress=False) for i, cfg in enumerate(cfgs)]
    for i, (a, b, single) in enumerate(zip(first, again, singles)):
        assert state_equal(final(a), final(b)) and same_rows(rows(a), rows(b))
        if i != 2:
            w, s = final(a), final(single)
            assert max(float((w[k] - s[k]).abs().max()) for k in w) < 1e-3
    assert all(math.isnan(r["train_loss_running"]) for r in rows(first[2]))


@pytest.mark.parametrize("kernels", ["per-replica", "batched"])
def test_a_diverging_replica_does_not_poison_the_others(root, alone, kernels, capfd):
    from experiments.training import train_replicas

    cfgs = [SGD[0], small_config(lr=1e6, order_seed=5, aug_seed=5), SGD[2]]
    runs = train_replicas(cfgs, root, device="cpu", progress=False, kernels=kernels)
    diverged = rows(runs[1])
    assert all(math.isnan(r["train_loss_running"]) for r in diverged) and diverged[-1]["test_acc"] <= 0.2
    assert "diverged" in capfd.readouterr().err
    for r in (0, 2):
        weights, single = final(runs[r]), final(alone(cfgs[r]))
        if kernels == "per-replica":
            assert_bitwise_alone(runs[r], alone(cfgs[r]))
        else:
            assert all(torch.isfinite(w).all() for w in weights.values())
            assert max(float((weights[k] - single[k]).abs().max()) for k in weights) < 1e-5


def test_a_batch_resumes_bit_for_bit_from_the_newest_common_good_checkpoint(root, alone):
    from experiments.training import train_replicas

    cfgs = [SGD[0].__class__(**{**SGD[i].to_dict(), "epochs": 3}) for i in (0, 1)]
    runs = [paths.run_dir(c.run_name(), root) for c in cfgs]
    for _ in range(2):  # two interruptions: after epoch 1, after epoch 2
        train_replicas(cfgs, root, device="cpu", progress=False, stop_after_epochs=1)
    assert not any((run / paths.DONE).exists() for run in runs)
    # Replica 0's newest checkpoint is damaged: the whole batch resumes from epoch 1.
    newest = runs[0] / paths.CHECKPOINTS / "epoch_0002.pt"
    newest.write_bytes(newest.read_bytes()[:-10])
    train_replicas(cfgs, root, device="cpu", progress=False)
    for cfg, run in zip(cfgs, runs):
        assert_bitwise_alone(run, alone(cfg))
        assert [r["epoch"] for r in rows(run)] == [1, 2, 3]
        assert [b["from_epoch"] for b in json.loads((run / paths.PROVENANCE).read_text())["batches"]] == [0, 1, 1]


def test_runs_begun_alone_and_fresh_ones_finish_in_batches_bitwise(root, alone):
    """No common checkpoint: the replicas train in one batch per starting epoch."""
    from experiments.training import train, train_replicas

    train(SGD[0], root, device="cpu", progress=False, stop_after_epochs=1)
    runs = train_replicas(SGD[:2], root, device="cpu", progress=False)
    for cfg, run in zip(SGD, runs):
        assert_bitwise_alone(run, alone(cfg))
    assert json.loads((runs[0] / paths.PROVENANCE).read_text())["batches"][0] == {
        "replicas": 1, "index": 0, "runs": [runs[0].name], "kernels": "per-replica", "from_epoch": 1}


def test_a_run_locked_by_another_worker_is_left_to_it(root, alone):
    """A batch never trains a run that a single-run worker holds: it trains the others, then waits."""
    from experiments.training import train_replicas
    from lmc.io import exclusive_lock

    runs = [paths.run_dir(c.run_name(), root) for c in SGD]
    batch = threading.Thread(target=train_replicas, args=(SGD, root), kwargs=dict(device="cpu", progress=False))
    with exclusive_lock(paths.lock_path(runs[1])):
        batch.start()
        deadline = time.monotonic() + 300
        while not all((runs[r] / paths.DONE).exists() for r in (0, 2)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (runs[1] / paths.DONE).exists() and not (runs[1] / paths.CONFIG).exists()
    batch.join(timeout=300)  # now the held run trains alone, after the lock is released
    for cfg, run in zip(SGD, runs):
        assert_bitwise_alone(run, alone(cfg))
    trained_in = [json.loads((run / paths.PROVENANCE).read_text()).get("trained_in") for run in runs]
    assert trained_in == ["a batch of 2", None, "a batch of 2"]


def test_what_the_engine_does_not_stack_and_bad_sizes(root):
    from experiments.training.replicas import batch_key, stackable, train_replicas
    from lmc.errors import UserError

    assert stackable(SGD[0]) and not stackable(small_config(model="cnn"))
    assert not stackable(small_config(spawn_step=5))  # spawned children go to the single-run trainer
    assert batch_key(SGD[0]) == batch_key(SGD[2]) != batch_key(small_config(batch_size=64))
    # Width is no shape of a 1-layer network: logistic regressions of any "width" stack.
    assert batch_key(small_config(model="linear", depth=1, width=8)) == batch_key(
        small_config(model="linear", depth=1, width=64))
    with pytest.raises(UserError, match="max_replicas=0"):
        train_replicas(SGD, root, device="cpu", max_replicas=0)
    assert not (paths.runs_dir(root)).exists() or not list(paths.runs_dir(root).glob("*/config.json"))


TINY = """
artefact = "tiny"
title = "tiny Table 1"
layout = "table2"
axes = ["columns"]

[base]
model = "linear"
depth = 2
dataset = "mnist_small"
width = 16
batch_size = 64
optimizer = "adam"

[scales.quick]
notes = "two epochs on 600 real digits"
config = { epochs = 2 }

[scales.paper]
notes = "three epochs"
config = { epochs = 3 }

[[columns]]
label = "ADAM ↑lr"
lr = 0.005

[[columns]]
label = "ADAM ↓lr"
lr = 0.001
"""


def test_a_sweep_with_replicas_gives_the_same_table(tmp_path, mnist_small, capsys):
    from app.cli import main

    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY)
    tables = {}
    for replicas in ("1", "4"):
        results = fresh(tmp_path, f"results-{replicas}")
        assert main(["reproduce", str(grid), "--replicas", replicas, "--device", "cpu", "--results",
                     str(results)]) == 0
        out = results / "reproduce" / "tiny" / "quick"
        tables[replicas] = (out / "table2.md").read_text()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["invocations"][-1]["runs_trained"] == 4
    assert tables["1"] == tables["4"]
    events = [json.loads(line) for line in (out / paths.SWEEP_EVENTS).read_text().splitlines()]
    batches = [e for e in events if e.get("kind") == "batch"]
    assert len(batches) == 1 and len(batches[0]["trained"]) == 4  # both pairs' runs as one batch
    assert main(["reproduce", str(grid), "--replicas", "0", "--results", str(results)]) == 2
    assert "--replicas '0'" in capsys.readouterr().err
