"""`lmc reproduce gpt_lmc`: seed 002's question with its faults mended. Are two GPT-style
decoders trained on tiny-shakespeare under different SGD noise linearly connected when they
start from initialisation, from a parent trained k steps, or from a pretrained model?

    lmc reproduce gpt_lmc --scale quick                # TinyGPT, characters, CPU, pretraining included
    lmc reproduce gpt_lmc --scale quick --seeds 3      # + 95% bootstrap intervals per row
    lmc reproduce gpt_lmc --scale paper --checkpoint ~/models/gpt2 --device cuda

Rows, one LMC pair per seed pair i (init seed i, children (2i+1, 2i+1) and (2i+2, 2i+2), as in
every grid): **from scratch**; **spawned at k**, the children continuing from a parent trained
k steps under its own noise (seeds 0, ``train_parent``); **fine-tuned**, both children starting
from a pretrained model (``init_from``, pinned by content). Every run is an ordinary run and every
pair an ordinary interpolation (11 α, every test window and an evenly spaced train subset of as
many windows), so a rerun trains nothing. Columns (``analysis.gpt_lmc``): loss barrier and
token-error barrier on both splits, the endpoints' losses; figure: test loss along α per row.

Seed 002's settings in every run: AdamW β = (0.9, 0.95) with nanoGPT's weight decay 0.1 on
matrices and embeddings, linear warm-up over the first 10% of the steps, then cosine from 6e-4
to 6e-5, gradient norm clipped at 1.0, the batch and context of the preset (``PRESET_BATCH_SIZE``).
Warm-up and spawn steps are fractions of ``max_steps``, so ``--set max_steps=N`` scales the whole
study; ``--set`` applies to every run it trains, the pretraining included.

The .betons store windows with ``stride = max(64, block_size)``: an epoch (one window per stored
sample) is then at most ~16k windows of tiny-shakespeare, so the per-epoch test evaluation and
checkpoint, and the loader digest of a run's first two epochs, stay a small part of a run (epochs
only rotate the seeds here; step budgets set the length). At stride = 8, TinyGPT's context, an
epoch would be 125k windows and the digest alone ~10 s of CPU per run.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field, replace as with_fields
from pathlib import Path

from lmc import paths
from lmc.errors import UsageError, UserError

TITLE = "GPT decoders on tiny-shakespeare: from scratch vs spawned vs fine-tuned (seed 002)"
SCALES = {
    "quick": "TinyGPT (64/4/4, context 8, 65 characters), 4,000 steps per child; pretrained 4,000 steps on "
             "CPython's pydoc topics mapped to Shakespeare's symbols; spawned at k = 100 and 500; "
             "about 10 min on 2 idle CPU cores",
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
    spawn_steps: tuple[int, ...] = field(default=())


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


def _preset(name: str, **overrides) -> dict:
    from experiments.models.gpt import PRESET_BATCH_SIZE, preset

    p = preset(name, **overrides)
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
    return Plan("quick", SCALES["quick"], data, rows, pretrain, note, ks)


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
                f"fine-tuned from the local checkpoint {folder} ({found.n_embd}/{found.n_layer}/{found.n_head})", ks)


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


def check(args) -> None:
    """For ``lmc reproduce`` to call before it writes anything: the same checks as ``run``."""
    plan_for(args)


# -- running -----------------------------------------------------------------------------------

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


def _remove_if_empty(out: Path, root) -> None:
    """Undo the empty folders ``lmc reproduce`` made for a study that then refused its input."""
    stop = paths.results_root(root).resolve()
    folder = out.resolve()
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def run(args, out: Path) -> int:
    try:
        plan = plan_for(args)
    except UserError:
        _remove_if_empty(out, args.results)
        raise
    if getattr(args, "dry_run", False):
        _remove_if_empty(out, args.results)
        return _dry_run(plan, args.seeds)
    return execute(plan, args, out)


def _dry_run(plan: Plan, seeds: int) -> int:
    if plan.pretrain is not None:
        print(f"pretraining: {plan.pretrain.run_name()} ({plan.pretrain.dataset}, {plan.pretrain.max_steps} steps)")
    for row in plan.rows:
        cfg = row.config
        name = "named after the pretraining run's content" if plan.pretrain and cfg.init_from else cfg.run_name()
        print(f"{row.key}: {row.label}: {cfg.dataset}, {cfg.max_steps} steps, batch {cfg.batch_size}, "
              f"context {cfg.block_size}; shared settings {name}")
    print(f"{len(plan.rows)} rows x {seeds} pair(s) = {2 * len(plan.rows) * seeds} runs"
          + (" + 1 pretraining run" if plan.pretrain is not None else ""))
    return 0


def execute(plan: Plan, args, out: Path) -> int:
    """Data, pretraining, parents, pairs (``app.sweep.execute``), then the table, figure and summary."""
    from analysis import gpt_lmc as report_gpt
    from analysis import report
    from analysis.artefacts import collect_curves, save_frame
    from analysis.tables import write_table
    from app import sweep
    from beton_builders.prepare import data_summary, ensure_dataset
    from experiments.training import train, train_parent
    from experiments.training.initial import pin
    from lmc.config import replace
    from lmc.io import atomic_write_text

    root, device, t0 = args.results, args.device, time.time()
    stages, trained = {}, []
    print(f"[gpt_lmc] {TITLE} — scale {plan.scale}: {len(plan.rows)} rows x {args.seeds} seed pair(s)")
    for spec in plan.data:
        ensure_dataset(spec, root)
    stages["data_s"] = round(time.time() - t0, 1)

    rows = list(plan.rows)
    if plan.pretrain is not None:
        t = time.time()
        was_done = (paths.run_dir(plan.pretrain.run_name(), root) / paths.DONE).exists()
        print(f"[gpt_lmc] {plan.pretrain_note}")
        train(plan.pretrain, root, device=device, progress=False)
        trained += [] if was_done else [plan.pretrain.run_name()]
        rows = [with_fields(r, config=pin(r.config, root)) if r.config.init_from else r for r in rows]
        stages["pretraining_s"] = round(time.time() - t, 1)

    t = time.time()
    spawned = [r for r in rows if r.spawn_step]
    for index in range(args.seeds) if spawned else ():
        parent = _parent_of(plan, spawned[0], index)
        ks = [r.spawn_step for r in spawned]
        missing = [k for k in ks if not paths.spawn_checkpoint_path(paths.run_dir(parent.run_name(), root), k).exists()]
        if missing:
            print(f"[gpt_lmc] seed pair {index}: parent {parent.run_name()} to steps {', '.join(map(str, ks))}")
            trained.append(f"{parent.run_name()} (parent to step {max(missing)})")
        train_parent(parent, ks, root, device=device)
    stages["parents_s"] = round(time.time() - t, 1)

    t = time.time()
    plan = with_fields(plan, rows=tuple(rows))
    tasks = [pair_task(plan, row, i, device) for row in rows for i in range(args.seeds)]
    atomic_write_text(out / paths.SWEEP_PLAN, json.dumps({"tasks": tasks}, indent=1) + "\n")
    slurm = {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_task": args.cpus_per_job,
             "timeout_min": args.timeout_min, "folder": str(out / paths.SUBMITIT_LOGS)}
    records = sweep.execute(tasks, root, executor=args.executor, jobs=args.jobs, events=out / paths.SWEEP_EVENTS,
                            slurm=slurm)
    trained += [name for r in records for name in r.get("trained", [])]
    failed = [r for r in records if r["status"] != "ok"]
    stages["pairs_s"] = round(time.time() - t, 1)

    intervals = args.seeds >= 2
    df = report_gpt.collect(tasks, root)
    save_frame(df, out / paths.SWEEP_RESULTS)
    curves = collect_curves(tasks, root)
    if not curves.empty:
        save_frame(curves, out / paths.GPT_LMC_CURVES)
    table = report_gpt.table(df, [r.label for r in rows], intervals, plan.pretrain_note)
    write_table(table, out / table.name)
    md = paths.table_files(out / table.name)[".md"].read_text()
    figs = report_gpt.figure(curves, out / paths.GPT_LMC_FIGURE, [r.label for r in rows]) if not curves.empty else []
    wall = time.time() - t0
    fields = {"command": "lmc " + " ".join(sys.argv[1:]), "grid": "gpt_lmc", "artefacts": ["gpt_lmc"],
              "title": TITLE, "scale": plan.scale, "notes": plan.notes, "grid_file": __file__,
              "grid_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), "overrides": list(args.set or []),
              "seeds": args.seeds, "intervals": intervals, "tasks": len(tasks),
              "ok": len(tasks) - len(failed), "failed": [{k: r.get(k) for k in ("cell", "pair", "error")} for r in failed],
              "datasets": {s.name: data_summary(s.name, root) for s in plan.data}, "pretraining": plan.pretrain_note,
              "tables": {table.name: md}, "figures": [str(f) for f in figs],
              "train_seconds": float(df.drop_duplicates("interpolation").train_seconds.sum()) if len(df) else 0.0,
              "hardware": report.hardware([t[r] for t in tasks for r in ("run_a", "run_b")], root)}
    report.update_summary(out, fields, {"started": t0, "wall_s": round(wall, 2), "executor": args.executor,
                                        "jobs": args.jobs, "runs_trained": len(trained), "trained": trained,
                                        "pairs": len(tasks), "stages": stages})
    legend = "mean ± std over pairs, 95% bootstrap interval" if intervals else "one pair per row"
    print(f"\ngpt_lmc ({legend}):\n\n{md}")
    for f in figs:
        print(f)
    print(f"[gpt_lmc] {len(tasks) - len(failed)}/{len(tasks)} pairs finished, {len(trained)} runs trained now, "
          f"wall time {wall / 60:.1f} min; outputs in {out}")
    if failed:
        print(f"[gpt_lmc] {len(failed)} pair(s) failed; rerun the same command to retry them (finished runs are kept)")
    return 1 if failed else 0


def _parent_of(plan: Plan, row: Row, index: int):
    """The parent every spawned child of seed pair ``index`` shares (its spawn step aside)."""
    from experiments.config import TrainConfig

    return TrainConfig.from_dict(pair_task(plan, row, index, "cpu")["config"]).parent()

