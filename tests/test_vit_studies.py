"""The ViT studies end to end on tiny data (`lmc reproduce vit_lmc` / `vit_prune`), their bad input,
the masked retraining's bitwise resume, and the paper scale's 224-pixel inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import state_equal
from lmc import paths


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vit_cfg(**overrides):
    from experiments.config import TrainConfig

    base = dict(model="vit", kernel=8, depth=1, width=16, heads=2, mlp_ratio=2.0, augment="none",
                optimizer="adamw", lr=3e-3, batch_size=50, epochs=2, platon_delta_t=2)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_scale(tmp_path_factory):
    """Real CIFAR-10 images: 200 train / 100 test to fine-tune on; 300 others, relabelled into 5
    classes, stand in for the pretraining source (the head then does not fit, as at the quick scale)."""
    from app.studies import _vit
    from beton_builders.prepare import DataSpec
    from beton_fixtures import need

    data = np.load(need("cifar10-subset-5k") / "cifar10_subset_5k.npz")
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "finetune.npz", x_train=data["x_train"][:200], y_train=data["y_train"][:200],
             x_test=data["x_test"][:100], y_test=data["y_test"][:100])
    np.savez(folder / "source.npz", x_train=data["x_train"][200:500], y_train=data["y_train"][200:500] % 5,
             x_test=data["x_test"][100:200], y_test=data["y_test"][100:200] % 5)
    return _vit.Scale(name="quick", notes="tiny: the tests' scale", data=DataSpec("vs_cifar", "npz",
                                                                                   src=str(folder / "finetune.npz")),
                      finetune=_vit.replace(vit_cfg(dataset="vs_cifar"), augment="vit", epochs=1),
                      pretrain=vit_cfg(dataset="vs_source", epochs=1),
                      pretrain_data=DataSpec("vs_source", "npz", src=str(folder / "source.npz")),
                      spawn_steps=(0, 2), prune_ratios=(0.2, 0.05), prune_epochs=1)


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    """One results root for both studies: vit_prune reuses vit_lmc's pretraining and dense pair."""
    return tmp_path_factory.mktemp("studies")


def reproduce(name, root, monkeypatch, scale=None, extra=()):
    from app.cli import main
    from app.studies import _vit

    if scale is not None:
        monkeypatch.setitem(_vit.SCALES, "quick", scale)
    return main(["reproduce", name, "--scale", "quick", "--results", str(root), *extra])


def _summary(root, name):
    return json.loads((paths.sweep_dir(name, "quick", root) / "summary.json").read_text())


def _runs(root) -> set[str]:
    return {p.name for p in paths.runs_dir(root).iterdir() if not p.name.startswith(".")}


def test_vit_lmc_end_to_end_then_a_rerun_trains_nothing(tiny_scale, study_root, monkeypatch, capsys):
    import pandas as pd

    tmp_path = study_root
    assert reproduce("vit_lmc", tmp_path, monkeypatch, tiny_scale) == 0
    out = paths.sweep_dir("vit_lmc", "quick", tmp_path)
    table = pd.read_csv(out / "vit_lmc.csv")
    assert table.init.tolist() == ["random", "pretrained"]
    for col in ("train_error_barrier_mean", "test_error_barrier_mean", "train_loss_barrier_mean",
                "test_loss_barrier_mean", "test_acc_mean", "test_max_loss_ratio_mean", "connected", "paper"):
        assert table[col].notna().all(), col
    assert ((table.test_error_barrier_mean >= 0) & (table.test_acc_mean > 0)).all()
    printed = capsys.readouterr().out
    assert "| random" in printed and "k* (random init)" in printed and "LMC emerges" in printed
    emergence = pd.read_csv(out / "emergence" / "emergence.csv")
    assert emergence.spawn_step.tolist() == [0, 2]
    for suffix in (".png", ".pdf"):
        assert (out / f"curves{suffix}").exists() and (out / "emergence" / f"emergence{suffix}").exists()

    # The pretrained row starts from the pretraining run, whose 5-class head was re-drawn for 10 classes.
    plan = json.loads((out / paths.SWEEP_PLAN).read_text())["tasks"]
    pretrained = next(t for t in plan if t["cell"] == "pretrained")
    assert pretrained["config"]["init_from"] == f"run:{tiny_scale.pretrain.run_name()}"
    prov = json.loads((paths.run_dir(pretrained["run_a"], tmp_path) / paths.PROVENANCE).read_text())
    assert prov["init_from"]["reinitialised"] == ["head.weight", "head.bias"]

    before = _runs(tmp_path)
    assert reproduce("vit_lmc", tmp_path, monkeypatch) == 0
    assert _runs(tmp_path) == before and _summary(tmp_path, "vit_lmc")["invocations"][-1]["runs_trained"] == 0
    from app.cli import main

    assert main(["report", "--results", str(tmp_path)]) == 0
    assert "ViT fine-tuning pairs (seed 001)" in paths.report_path(tmp_path).read_text()


def test_vit_lmc_with_two_workers_overlaps_the_pretraining_and_gives_the_same_runs(tiny_scale, study_root,
                                                                                    tmp_path, monkeypatch, capsys):
    """--jobs 2: the random init's pairs and emergence train while the pretraining does (separate
    worker processes), the pretrained pairs after it; every run, barrier and table cell is the
    plain schedule's, bit for bit."""
    import pandas as pd

    from experiments.interpolate import load_final

    plain = paths.sweep_dir("vit_lmc", "quick", study_root)
    if not (plain / "vit_lmc.csv").exists():
        assert reproduce("vit_lmc", study_root, monkeypatch, tiny_scale) == 0
    assert reproduce("vit_lmc", tmp_path, monkeypatch, tiny_scale, extra=("--jobs", "2")) == 0
    assert "2 workers: pretraining, and meanwhile the random init's pairs and emergence" in capsys.readouterr().out
    out = paths.sweep_dir("vit_lmc", "quick", tmp_path)
    assert _runs(tmp_path) == _runs(study_root)
    finished = {p.parent.name for p in paths.runs_dir(tmp_path).glob(f"*/{paths.FINAL}")}
    assert len(finished) == 1 + 4 + 2  # pretraining, two pairs, the emergence children (the parent has no final)
    for name in finished:
        assert state_equal(load_final(paths.run_dir(name, tmp_path))[1], load_final(paths.run_dir(name, study_root))[1])
    pd.testing.assert_frame_equal(pd.read_csv(out / "vit_lmc.csv"), pd.read_csv(plain / "vit_lmc.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "emergence" / "emergence.csv"),
                                  pd.read_csv(plain / "emergence" / "emergence.csv"))
    assert ([t["cell"] for t in json.loads((out / paths.SWEEP_PLAN).read_text())["tasks"]]
            == [t["cell"] for t in json.loads((plain / paths.SWEEP_PLAN).read_text())["tasks"]])


def test_vit_prune_end_to_end_masks_hold_then_a_rerun_trains_nothing(tiny_scale, study_root, monkeypatch):
    import pandas as pd

    from experiments.interpolate import load_final
    from experiments.pruning.oneshot import load_mask

    tmp_path = study_root
    assert reproduce("vit_prune", tmp_path, monkeypatch, tiny_scale) == 0
    out = paths.sweep_dir("vit_prune", "quick", tmp_path)
    table = pd.read_csv(out / "vit_prune.csv")
    assert table.ratio.tolist() == [1.0, 0.2, 0.05]
    for col in ("platon_acc_mean", "magnitude_oneshot_acc_mean", "lottery_acc_mean", "magnitude_lottery_acc_mean",
                "lottery_test_barrier_mean", "magnitude_test_barrier_mean"):
        assert table[col].between(0, 100).all(), col
    assert table.paper_platon_acc.tolist() == [98.0, 95.3, 93.7]

    plan = json.loads((out / paths.SWEEP_PLAN).read_text())["tasks"]
    masked = [t for t in plan if t["config"]["prune"] == "mask"]
    assert {t["config"]["mask_from"].split(":")[0] for t in masked} == {"run", "mask"}
    for task in masked:
        cfg = task["config"]
        source = paths.run_dir(cfg["mask_from"][4:], tmp_path) if cfg["mask_from"].startswith("run:") else \
            paths.mask_dir(cfg["mask_from"][5:], tmp_path)
        mask = load_mask(source)
        assert mask.num_kept == round(cfg_ratio(task) * mask.num_total)  # exact, for PLATON's and magnitude's
        finals = [load_final(paths.run_dir(task[r], tmp_path))[1] for r in ("run_a", "run_b")]
        for state in finals:  # the masked children: pruned weights exactly zero, the kept ones trained
            assert all((state[n][~k] == 0).all() for n, k in mask.keep.items())
        assert not state_equal(*finals)
    assert (paths.masks_dir(tmp_path)).is_dir()

    before = _runs(tmp_path)
    assert reproduce("vit_prune", tmp_path, monkeypatch) == 0
    assert _runs(tmp_path) == before and _summary(tmp_path, "vit_prune")["invocations"][-1]["runs_trained"] == 0


def cfg_ratio(task) -> float:
    return task["labels"]["ratio"]


def test_the_paper_scale_without_its_checkpoint_or_data_stops_before_writing(tmp_path, monkeypatch, capsys):
    from app.cli import main

    results = tmp_path / "results"
    for extra, needle in (((), "pass --checkpoint PATH"),
                          (("--checkpoint", str(tmp_path / "nowhere")), "nowhere/config.json does not exist")):
        for study in ("vit_lmc", "vit_prune"):
            assert main(["reproduce", study, "--scale", "paper", "--results", str(results), *extra]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and needle in err[0]
    # A real (tiny) checkpoint, but no full CIFAR-10 under the data root.
    folder = _hf_vit(tmp_path / "hf", image_size=16, patch_size=4)
    capsys.readouterr()  # transformers' own progress bars
    monkeypatch.setenv("LMC_DATA_ROOT", str(tmp_path / "empty"))
    assert main(["reproduce", "vit_lmc", "--scale", "paper", "--checkpoint", str(folder),
                 "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-10-python.tar.gz" in err[0]
    assert not results.exists()

    # With both, the fine-tuning config is the checkpoint's architecture at its own input size.
    from app.studies import _vit
    from experiments.models.hf_vit import load_hf_vit
    from experiments.training import build_model

    scale = _vit.paper_scale(str(folder))
    cfg = scale.finetune
    assert (cfg.kernel, cfg.depth, cfg.width, cfg.heads, cfg.mlp_ratio, cfg.image_size) == (4, 1, 16, 2, 2.0, 16)
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.augment, scale.prune_epochs) == ("adamw", 2e-4, 8, "vit", 4)
    assert load_hf_vit(folder, build_model(cfg, (3, 32, 32), 10)).reinitialised == ("head.weight", "head.bias")


def _hf_vit(folder, **config):
    from transformers import ViTConfig as HFConfig, ViTForImageClassification

    torch.manual_seed(0)
    hf = ViTForImageClassification(HFConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, num_labels=3, **config)).eval()
    hf.save_pretrained(folder)
    return folder


def test_image_size_resizes_inside_the_model_as_the_checkpoint_expects(tmp_path):
    """A checkpoint pretrained at 16x16 fine-tunes on 32x32 images: the model resizes them first,
    and gives the checkpoint's own logits on the resized images."""
    from transformers import ViTForImageClassification

    from dataclasses import replace

    from experiments.models import ViT
    from experiments.models.hf_vit import load_hf_vit, vit_config_from_hf
    from experiments.training import build_model

    folder = _hf_vit(tmp_path / "hf", image_size=16, patch_size=4)
    trainer = build_model(vit_cfg(dataset="x", kernel=4, width=16, heads=2, depth=1, image_size=16), (3, 32, 32), 3)
    assert trainer.pos_embed.shape[1] == 17  # (16 / 4)^2 patches + the class token: the checkpoint's positions
    load_hf_vit(folder, trainer)
    # The checkpoint's own LayerNorm epsilon (1e-12; the trainer's ViT uses 1e-6), for exact logits.
    model = ViT(replace(vit_config_from_hf(folder, num_classes=3), input_shape=(3, 32, 32), image_size=16))
    load_hf_vit(folder, model)
    x = torch.randn(4, 3, 32, 32)
    hf = ViTForImageClassification.from_pretrained(folder).eval()
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), hf(pixel_values=small).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(x), hf(pixel_values=x[..., :16, :16]).logits, atol=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--model", "vit", "--kernel", "8", "--width", "16", "--heads", "2", "--depth", "1", "--prune", "platon",
      "--prune-ratio", "1.5"], "prune_ratio=1.5 is invalid: expected a remaining ratio in (0, 1]"),
    (["--model", "vit", "--kernel", "8", "--width", "16", "--heads", "2", "--depth", "1", "--prune", "platon",
      "--prune-ratio", "0"], "prune_ratio=0.0 is invalid"),
    (["--model", "mlp", "--prune", "platon"], "has no prunable matrices"),
])
def test_bad_pruning_input_through_lmc_train_is_one_line_and_no_run(argv, message, tmp_path, tiny_scale, capsys):
    from app.cli import main
    from beton_builders.prepare import ensure_dataset

    ensure_dataset(tiny_scale.data, tmp_path)
    rc = main(["train", "--dataset", "vs_cifar", "--epochs", "1", "--batch-size", "50", "--quiet",
               "--results", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not paths.runs_dir(tmp_path).exists() or not _runs(tmp_path)


def test_masked_retraining_from_the_pretrained_weights_resumes_bit_for_bit(tiny_scale, tmp_path):
    from beton_builders.prepare import ensure_dataset
    from experiments.interpolate import load_final
    from experiments.training import train
    from experiments.training.initial import pin

    for spec in (tiny_scale.data, tiny_scale.pretrain_data):
        ensure_dataset(spec, tmp_path)
    start = train(tiny_scale.pretrain, tmp_path, progress=False)
    source = train(pin(vit_cfg(dataset="vs_cifar", prune="platon", prune_ratio=0.2, init_from=f"run:{start.name}"),
                       tmp_path), tmp_path, progress=False)
    cfg = pin(vit_cfg(dataset="vs_cifar", prune="mask", mask_from=f"run:{source.name}", init_from=f"run:{start.name}",
                   epochs=3, order_seed=1, aug_seed=1), tmp_path)
    whole = load_final(train(cfg, tmp_path, progress=False))[1]

    again = tmp_path / "again"
    for name in (start.name, source.name):
        shutil.copytree(paths.run_dir(name, tmp_path), paths.run_dir(name, again))
    for dataset in ("vs_cifar", "vs_source"):
        shutil.copytree(paths.beton_dir(dataset, tmp_path), paths.beton_dir(dataset, again))
    train(cfg, again, progress=False, stop_after_epochs=1)
    train(cfg, again, progress=False, stop_after_epochs=1)
    resumed = load_final(train(cfg, again, progress=False))[1]
    assert state_equal(resumed, whole)
    assert any((whole[n] == 0).any() for n in whole if ".attn." in n)  # the mask really pruned
