"""The plans of ``lmc reproduce gpt_lmc`` (``app/studies/gpt_lmc.py``): per scale, the data, the
pretraining run and the rows' shared settings, every input checked and nothing written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmc import paths
from lmc.errors import UsageError, UserError

SCALES = {
    "quick": "TinyGPT (64/4/4, context 8, 65 characters), 4,000 steps per child; pretrained 4,000 steps on "
             "CPython's pydoc topics mapped to Shakespeare's symbols; spawned at k = 100 and 500; "
             "about 14 min on an idle CPU (one thread; measured 697 s of CPU for the pairs)",
    "paper": "seed 002's CompactGPT (192/6/6, context 64, GPT-2 BPE) from scratch for 10k steps (spawned at "
             "k = 250 and 1,250), and GPT-2 fine-tuned for 300 steps (batch 8 as 2 micro-batches, context "
             "1,024) from --checkpoint, a local Hugging Face GPT-2 folder; a GPU",
}

NUM_ALPHAS = 11
WARMUP_FRACTION = 0.1            # seed 002: 1,000 warm-up steps of CompactGPT's 10,000
SPAWN_FRACTIONS = (0.025, 0.125)  # of max_steps: early, where Frankle et al. saw stability emerge
QUICK_STEPS = 4000
MIN_STRIDE = 64
PAPER_SCRATCH_STEPS = 10_000     # seed 002's CompactGPT
PAPER_FINETUNE_STEPS = 300       # seed 002's GPT-2 fine-tuning
PAPER_FINETUNE_MICRO_BATCHES = 2  # seed 002's sim_batch_size: 8 sequences of 1,024 tokens as 2 x 4
# Seed 002's optimiser and schedule (its train.py follows nanoGPT).
SEED002 = dict(model="gpt", augment="offset", optimizer="adamw", lr=6e-4, min_lr=6e-5, adam_beta1=0.9,
               adam_beta2=0.95, weight_decay=0.1, schedule="cosine", grad_clip=1.0)


class MissingInputError(UserError):
    """The paper scale lacks a file it must be given (never downloaded)."""


@dataclass(frozen=True)
class Row:
    """One row of the table: the settings every pair of the row shares (before its init seed)."""
    key: str
    label: str
    config: object                  # TrainConfig
    spawn_step: int = 0


@dataclass(frozen=True)
class Plan:
    scale: str
    notes: str
    data: tuple                     # DataSpecs, in build order (a vocab_from after its source)
    rows: tuple[Row, ...]
    pretrain: object = None         # the TrainConfig the fine-tuned row starts from, or None (a checkpoint)
    pretrain_note: str = ""


# -- planning (nothing written) ----------------------------------------------------------------

# What tells the rows apart is the study's to choose, not --set's.
FIXED_BY_THE_STUDY = ("dataset", "model", "init_from", "init_from_sha256", "init_seed", "order_seed", "aug_seed",
                      "spawn_step", "parent_order_seed", "parent_aug_seed", "replicate")
# A dataset name until the row's own is known (it depends on block_size, which --set may change).
PENDING = "pending"


def _overridden(overrides, key: str) -> bool:
    return any(o.split("=", 1)[0].strip().replace("-", "_") == key for o in overrides)


def _config(settings: dict, overrides):
    """A TrainConfig of ``settings`` under the user's ``--set``; warm-up = 10% of the steps unless set."""
    from experiments.config import TrainConfig
    from lmc.config import apply_overrides, replace

    fixed = [k for k in FIXED_BY_THE_STUDY if _overridden(overrides, k)]
    if fixed:
        raise UsageError(f"--set {fixed[0]}=...: gpt_lmc chooses each row's {fixed[0]} itself; --set may change "
                         f"the shared settings (max_steps, lr, width, block_size, ...)")
    cfg = apply_overrides(TrainConfig(**settings), list(overrides))
    if not (_overridden(overrides, "warmup_steps") or _overridden(overrides, "warmup_epochs")):
        cfg = replace(cfg, warmup_steps=round(WARMUP_FRACTION * cfg.max_steps))
    return cfg


def _preset(name: str) -> dict:
    from experiments.models.gpt import PRESET_BATCH_SIZE, preset

    p = preset(name)
    return dict(width=p.n_embd, depth=p.n_layer, heads=p.n_head, block_size=p.block_size,
                batch_size=PRESET_BATCH_SIZE[name])


def _text_spec(name: str, src, tokenizer: str, stride: int, **options):
    from beton_builders.prepare import DataSpec

    return DataSpec(name, "text", src, options=(("tokenizer", tokenizer), ("stride", stride), *options.items()))


def _spawn_rows(cfg, spawn_steps) -> list[Row]:
    return [Row(f"spawn_{k}", f"spawned at k = {k}", cfg, k) for k in spawn_steps]


def spawn_steps_of(cfg) -> tuple[int, ...]:
    steps = {round(f * cfg.max_steps) for f in SPAWN_FRACTIONS}
    return tuple(sorted(k for k in steps if 0 < k < cfg.max_steps))


def quick_plan(overrides=()) -> Plan:
    scratch = _config({**SEED002, **_preset("TinyGPT"), "max_steps": QUICK_STEPS, "dataset": PENDING}, overrides)
    stride = max(MIN_STRIDE, scratch.block_size)
    shakes, pydoc = f"shakespeare_char_s{stride}", f"pydoc_char_s{stride}"
    from lmc.config import replace

    scratch = replace(scratch, dataset=shakes)
    pretrain = replace(scratch, dataset=pydoc)
    finetune = replace(scratch, init_from=f"run:{pretrain.run_name()}")
    ks = spawn_steps_of(scratch)
    data = (_text_spec(shakes, None, "char", stride),
            _text_spec(pydoc, "corpus:pydoc_topics", "char", stride, vocab_from=shakes))
    note = (f"pretrained {pretrain.max_steps} steps on CPython's pydoc topics (`corpus:pydoc_topics`), "
            f"characters mapped to Shakespeare's 65 symbols: run {pretrain.run_name()}")
    rows = (Row("scratch", "from scratch", scratch), *_spawn_rows(scratch, ks),
            Row("finetuned", "fine-tuned (pretrained on pydoc topics)", finetune))
    return Plan("quick", SCALES["quick"], data, rows, pretrain, note)


def paper_inputs(checkpoint) -> tuple[Path, object, Path]:
    """The paper scale's checkpoint folder, its GPTConfig and GPT-2's BPE file, checked; one
    line naming what is missing or wrong otherwise."""
    from beton_builders.text import GPT2_VOCAB
    from experiments.models.gpt import CheckpointError, hf_gpt2_config

    bpe = paths.gpt2_bpe_file()
    needs = []
    if not checkpoint:
        needs.append("--checkpoint PATH, a local Hugging Face GPT-2 folder (config.json and weights as "
                     "save_pretrained writes them; seed 002 fine-tunes GPT-2 124M)")
    if not bpe.is_file():
        needs.append(f"GPT-2's BPE ranks file at {bpe} (gpt2.tiktoken, or set LMC_DATA_ROOT to a folder holding it)")
    if needs:
        raise MissingInputError(f"gpt_lmc --scale paper needs {' and '.join(needs)}; nothing is downloaded, "
                                f"nothing was run")
    folder = Path(checkpoint).expanduser()
    found = hf_gpt2_config(folder)
    if found.vocab_size != GPT2_VOCAB:
        raise CheckpointError(f"{folder}: the checkpoint has a vocabulary of {found.vocab_size} tokens, the paper "
                              f"scale fine-tunes on GPT-2's BPE ({GPT2_VOCAB} tokens); give a GPT-2 checkpoint "
                              f"(e.g. GPT-2 124M's folder)")
    return folder, found, bpe


def paper_plan(checkpoint, overrides=(), root=None) -> Plan:
    from experiments.training.initial import pin
    from lmc.config import replace

    folder, found, bpe = paper_inputs(checkpoint)
    scratch = _config({**SEED002, **_preset("CompactGPT"), "max_steps": PAPER_SCRATCH_STEPS, "dataset": PENDING},
                      overrides)
    block = min(1024, found.block_size)
    finetune = _config({**SEED002, **_preset("GPT2"), "width": found.n_embd, "depth": found.n_layer,
                        "heads": found.n_head, "block_size": block, "max_steps": PAPER_FINETUNE_STEPS,
                        "micro_batches": PAPER_FINETUNE_MICRO_BATCHES, "dataset": PENDING,
                        "init_from": str(folder.resolve())}, overrides)
    scratch_data = f"shakespeare_gpt2_s{max(MIN_STRIDE, scratch.block_size)}"
    finetune_data = f"shakespeare_gpt2_s{max(MIN_STRIDE, finetune.block_size)}"
    scratch = replace(scratch, dataset=scratch_data)
    finetune = pin(replace(finetune, dataset=finetune_data), root)  # its name follows the weights' content
    specs = {name: _text_spec(name, None, "gpt2", int(name.rsplit("_s", 1)[1]), bpe=str(bpe))
             for name in (scratch_data, finetune_data)}
    ks = spawn_steps_of(scratch)
    rows = (Row("scratch", "from scratch (CompactGPT)", scratch), *_spawn_rows(scratch, ks),
            Row("finetuned", f"fine-tuned ({folder.name})", finetune))
    return Plan("paper", SCALES["paper"], tuple(specs.values()), rows, None,
                f"fine-tuned from the local checkpoint {folder} ({found.n_embd}/{found.n_layer}/{found.n_head})")


def plan_for(args) -> Plan:
    """The scale's plan, every input checked; nothing is written."""
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if getattr(args, "intervals", False) and args.seeds < 2:
        raise UsageError(f"--intervals needs at least 2 seed pairs per row, got --seeds {args.seeds}; pass --seeds 3")
    overrides = tuple(getattr(args, "set", None) or ())
    if args.scale == "quick":
        if args.checkpoint:
            raise UsageError("--checkpoint applies to gpt_lmc's paper scale; the quick scale pretrains its own "
                             "model on CPython's pydoc topics (drop --checkpoint or pass --scale paper)")
        return quick_plan(overrides)
    return paper_plan(args.checkpoint, overrides, args.results)


def pair_task(plan: Plan, row: Row, index: int, device: str) -> dict:
    """One pair of one row as a task of ``app.sweep`` (locks, pools, submitit)."""
    from experiments.grids import pair_seeds
    from experiments.pairs import child_configs
    from lmc.config import replace

    init_seed, seeds_a, seeds_b = pair_seeds(index)
    shared = replace(row.config, init_seed=init_seed, spawn_step=row.spawn_step)
    a, b = child_configs(shared, seeds_a, seeds_b)
    return {"grid": "gpt_lmc", "scale": plan.scale, "cell": row.key, "pair": index,
            "labels": {"row": row.label, "spawn_step": row.spawn_step}, "config": shared.to_dict(),
            "seeds_a": list(seeds_a), "seeds_b": list(seeds_b), "num_alphas": NUM_ALPHAS, "device": device,
            "run_a": a.run_name(), "run_b": b.run_name(),
            "interpolation": paths.interpolation_name(a.run_name(), b.run_name(), NUM_ALPHAS)}
