"""`lmc verify RUN [--epochs N]`: redo a run (or its first N epochs) here and compare weights bitwise.

This is how a reader checks a published result on their own machine: the run directory's
``config.json`` is retrained through the public trainer in a temporary results root (the
run's .beton files are linked, not copied), under the numerics profile the run recorded, and
the weights of epoch N are compared with the ones the run stored. Prints ``identical`` or the
first differing tensor and the largest difference; exit code 0 when identical, 1 when not.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from lmc import numerics, paths
from lmc.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("verify", help="retrain a run in a temporary place and compare its weights bit for bit",
                       description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory (results/runs/NAME) or a run name under the results root")
    p.add_argument("--epochs", type=int, default=None,
                   help="retrain the first N epochs and compare with the run's weights of epoch N "
                        "(default: the newest epoch the run stored)")
    p.add_argument("--results", default=None, help="results root for a run given by name "
                                                    "(default: $LMC_RESULTS or ./results)")
    p.set_defaults(func=run)


def run(args) -> int:
    report = verify(args.run, epochs=args.epochs, root=args.results, log=print)
    return 0 if report["identical"] else 1


def resolve_run(run: str, root=None) -> tuple[Path, Path]:
    """(run directory, its results root) for a path or a name."""
    path = Path(run).expanduser()
    if not (path / paths.CONFIG).exists():
        path = paths.run_dir(run, root)
    if not (path / paths.CONFIG).exists():
        raise UsageError(f"{run}: not a run directory (no {paths.CONFIG}); give results/runs/NAME or a run name "
                         f"under --results")
    path = path.resolve()
    owner = path.parent.parent
    if paths.run_dir(path.name, owner) != path:
        raise UsageError(f"{path} is not inside a results root's runs folder; verify needs the run where "
                         f"`lmc train` wrote it")
    return path, owner


def stored_epochs(run: Path) -> dict[int, str]:
    """Epoch -> how the run's weights of that epoch can be compared ("weights" or "digest")."""
    from lmc.io import read_jsonl

    out = {int(row["epoch"]): "digest" for row in read_jsonl(run / paths.METRICS)
           if numerics.WEIGHTS_DIGEST_KEY in row} if (run / paths.METRICS).exists() else {}
    for ckpt in (run / paths.CHECKPOINTS).glob("epoch_*.pt"):
        out[int(ckpt.stem.split("_")[1])] = "weights"
    if (run / paths.DONE).exists():
        out[_config(run).epochs] = "weights"
    return out


def _config(run: Path):
    from experiments.training.rundir import read_config

    return read_config(run)


def _stored_state(run: Path, epoch: int) -> dict | None:
    from experiments.training import checkpoints

    for path in (paths.checkpoint_path(run, epoch), run / paths.FINAL):
        if path.exists():
            ckpt = checkpoints.load(path)  # checked against its checksum first
            if ckpt.get("epoch") == epoch:
                return ckpt["model"]
    return None


def _recorded_device(run: Path) -> str:
    prov_path = run / paths.PROVENANCE
    return json.loads(prov_path.read_text()).get("device", "cpu") if prov_path.exists() else "cpu"


def _adopt_profile(run: Path, log) -> str:
    """Take the run's recorded thread count; refuse a run of the other numerics mode."""
    prov_path = run / paths.PROVENANCE
    saved = json.loads(prov_path.read_text()).get("numerics") if prov_path.exists() else None
    if saved is None:
        log("[verify] note: the run recorded no numerics profile (trained before profiles existed); "
            "equality is only expected on the machine type and settings that trained it")
        return numerics.mode()
    if (saved["name"] == "native") != (numerics.mode() == "native"):
        how = (f"lmc --fast-numerics verify {run}" if saved["name"] == "native"
               else f"lmc verify {run} (without --fast-numerics, {numerics.MODE_ENV} unset)")
        raise UsageError(f"{run.name} was trained under the {saved['name']} numerics profile, this process runs "
                         f"{numerics.mode()}; verify it under its own: {how}")
    threads = saved.get("effective", {}).get("intra_op_threads")
    if saved["name"] != "native" and threads and threads != numerics.pinned_threads():
        numerics.set_pinned_threads(int(threads))
    numerics.configure_torch()
    diffs = numerics.differences(saved, numerics.profile())
    if diffs:
        log(f"[verify] note: this process differs from the run's numerics in {'; '.join(diffs)}: bitwise "
            f"equality is promised only under the same profile and library versions")
    return saved["name"]


def _note_device(run: Path, cfg, log) -> None:
    """GPU runs are bitwise only on the same GPU model (docs/numerics.md): say where each ran."""
    import torch

    prov_path = run / paths.PROVENANCE
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    cuda = _recorded_device(run) == "cuda" and torch.cuda.is_available()
    here_name = torch.cuda.get_device_name() if cuda else "cpu"
    there = prov.get("gpu") or prov.get("device", "?")
    if str(there) != here_name:
        log(f"[verify] note: the run was trained on {there}, this retraining runs on {here_name}: bitwise "
            f"equality is promised on the CPU profile, and on a GPU only for the same GPU model and versions")


def compare_states(stored: dict, fresh: dict) -> dict:
    """Bitwise comparison: the first differing tensor (in the state dict's order) and the
    largest difference over all tensors."""
    import torch

    if list(stored) != list(fresh):
        missing = sorted(set(stored) ^ set(fresh))
        return {"identical": False, "first": missing[0] if missing else "(order)", "why": "tensor names differ"}
    first, worst, worst_name = None, 0.0, None
    for name, a in stored.items():
        b = fresh[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            return {"identical": False, "first": name, "why": f"shape/dtype {tuple(a.shape)} {a.dtype} vs "
                                                           f"{tuple(b.shape)} {b.dtype}"}
        if torch.equal(a, b):
            continue
        diff = (a.double() - b.double()).abs().nan_to_num(float("inf"))
        if first is None:
            first = {"first": name, "shape": tuple(a.shape), "differing": int((diff > 0).sum()),
                     "numel": a.numel(), "first_max": float(diff.max())}
        if float(diff.max()) > worst:
            worst, worst_name = float(diff.max()), name
    if first is None:
        return {"identical": True}
    return {"identical": False, **first, "largest": worst, "largest_in": worst_name}


def verify(run, *, epochs: int | None = None, root=None, log=print) -> dict:
    """Retrain ``run`` for ``epochs`` (default: its newest stored epoch) in a temporary
    results root and compare; returns the comparison (``identical``: bool)."""
    from experiments.training import train

    run, owner = resolve_run(str(run), root)
    cfg = _config(run)
    available = stored_epochs(run)
    if not available:
        raise UsageError(f"{run.name} stored no weights yet (no checkpoint); train it first")
    epoch = max(available) if epochs is None else epochs
    if epoch not in available:
        raise UsageError(f"{run.name} keeps the weights of epoch(s) {', '.join(map(str, sorted(available)))} only; "
                         f"choose --epochs among them")
    profile_name = _adopt_profile(run, log)
    _note_device(run, cfg, log)
    threads = numerics.profile()["effective"]["intra_op_threads"]
    log(f"[verify] {run.name}: retraining epochs 1-{epoch} of {cfg.epochs} from {paths.CONFIG} under the "
        f"{profile_name} numerics profile ({threads} intra-op thread{'s' if threads != 1 else ''}), "
        f"in a temporary results root")
    with tempfile.TemporaryDirectory(prefix="lmc-verify-") as tmp:
        source = paths.beton_dir(cfg.dataset, owner)
        if source.exists():  # the run's own data; otherwise built as `lmc train` would
            paths.beton_dir(cfg.dataset, tmp).parent.mkdir(parents=True)
            os.symlink(source, paths.beton_dir(cfg.dataset, tmp))
        else:
            import beton_builders

            beton_builders.ensure(cfg.dataset, tmp)
        device = "cuda" if _recorded_device(run) == "cuda" else "cpu"
        fresh_run = train(cfg, tmp, device=device, progress=False, stop_after_epochs=epoch)
        fresh = _stored_state(fresh_run, epoch)
        noise = _same_json(run / paths.DIGEST, fresh_run / paths.DIGEST)
    log(f"[verify] loader digest (data order and augmentation): {noise}")
    stored = _stored_state(run, epoch)
    if stored is not None:
        result = compare_states(stored, fresh)
    elif numerics.state_digest(fresh) == _metrics_digest(run, epoch):
        result = {"identical": True}
    else:  # the run logged only a digest of that epoch: no tensor to point at
        result = {"identical": False, "first": f"the sha256 of epoch {epoch}'s weights",
                  "why": "differs (the run stored only the digest of that epoch)"}
    result.update(run=run.name, epoch=epoch, digest=numerics.state_digest(fresh))
    if result["identical"]:
        values = sum(t.numel() for t in fresh.values())
        log(f"[verify] identical: the weights of epoch {epoch} ({len(fresh)} tensors, {values:,} values) are "
            f"bitwise equal (sha256 {result['digest'][:16]})")
    elif "differing" in result:
        log(f"[verify] DIFFERENT at epoch {epoch}: first differing tensor {result['first']} "
            f"{'x'.join(map(str, result['shape']))}, {result['differing']:,} of {result['numel']:,} values differ "
            f"by up to {result['first_max']:.3g}; largest difference {result['largest']:.3g} (in {result['largest_in']})")
    else:
        log(f"[verify] DIFFERENT at epoch {epoch}: {result['first']} {result.get('why', '')}".rstrip())
    return result


def _metrics_digest(run: Path, epoch: int) -> str:
    from lmc.io import read_jsonl

    return next(row[numerics.WEIGHTS_DIGEST_KEY] for row in read_jsonl(run / paths.METRICS)
                if int(row["epoch"]) == epoch)


def _same_json(a: Path, b: Path) -> str:
    if not a.exists():
        return "not recorded by the run"
    return "identical" if json.loads(a.read_text()) == json.loads(b.read_text()) else "DIFFERENT (the data differs)"
