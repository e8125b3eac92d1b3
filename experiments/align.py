"""`lmc align RUN_A RUN_B`: permute B's hidden units to match A's, then compare the barriers.

Two runs from different initialisations are usually not linearly connected; often they are
once B's units are reordered to line up with A's (Entezari et al. 2022; Ainsworth et al.
2023). This module runs weight matching (:mod:`experiments.permutations`) on the two final
states, writes π(B) as a run-like folder,

    <results>/aligned/<runB>__to__<runA>-seed<S>/   config.json (B's), final.pt, provenance.json

(the provenance holds the permutations, the source runs, the seed and the sweeps), and
interpolates A with B and A with π(B), so the barrier before and after alignment sit side by
side. π(B) computes exactly B's function, so its endpoint metrics equal B's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from experiments import permutations
from experiments.config import TrainConfig
from experiments.interpolate import interpolate_runs, load_final
from lmc import paths
from lmc.config import save_json
from lmc.errors import UserError

# Settings that shape the network (and its input): the two runs must agree on all of them.
ARCHITECTURE_FIELDS = ("dataset", "model", "depth", "width", "slope", "channels", "kernel", "heads", "head_dim",
                       "embed_dim")


class AlignmentError(UserError):
    """Two runs that cannot be aligned (different architectures or widths, missing data)."""


@dataclass(frozen=True)
class Alignment:
    aligned_run: Path                # the run-like folder of π(B)
    matching: permutations.Matching
    before: pd.DataFrame             # barrier rows of A–B, one per split
    after: pd.DataFrame              # barrier rows of A–π(B)
    distance_before: float           # ‖Θ_A − Θ_B‖ over the permuted weights
    distance_after: float            # ‖Θ_A − π(Θ_B)‖

    def table(self) -> pd.DataFrame:
        """One row per split: error and loss barriers before and after, endpoint accuracies."""
        cols = ["split", "error_barrier_pct", "loss_barrier"]
        merged = self.before[cols + ["acc_a", "acc_b"]].merge(self.after[cols], on="split",
                                                               suffixes=("_before", "_after"))
        return merged[["split", "error_barrier_pct_before", "error_barrier_pct_after", "loss_barrier_before",
                       "loss_barrier_after", "acc_a", "acc_b"]]


def check_alignable(cfg_a: TrainConfig, cfg_b: TrainConfig) -> None:
    for key in ARCHITECTURE_FIELDS:
        if getattr(cfg_a, key) != getattr(cfg_b, key):
            raise AlignmentError(f"the runs differ in {key} (A {getattr(cfg_a, key)!r}, B {getattr(cfg_b, key)!r}); "
                                 f"alignment needs the same architecture and width: align runs of one config "
                                 f"that differ only in seeds")


def _distance(spec: permutations.PermutationSpec, a: dict, b: dict) -> float:
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in spec.weights) ** 0.5)


def align_runs(run_a: str | Path, run_b: str | Path, *, seed: int = 0, num_alphas: int = 11,
               splits: tuple[str, ...] = ("train", "test"), root=None, device="auto",
               progress: bool = True) -> Alignment:
    """Match B to A, write π(B) (``paths.aligned_run_dir``), interpolate A–B and A–π(B)."""
    from experiments.training import checkpoints
    from lmc.provenance import provenance

    run_a, run_b = Path(run_a), Path(run_b)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AlignmentError(f"the alignment seed must be a non-negative integer, got {seed!r}")
    if num_alphas < 2:
        raise AlignmentError(f"num_alphas must be at least 2 (α = 0 and 1), got {num_alphas}")
    cfg_a, state_a = load_final(run_a)
    cfg_b, state_b = load_final(run_b)
    check_alignable(cfg_a, cfg_b)
    spec = permutations.spec_for(cfg_a.model, state_a)  # refuses a family it cannot permute
    for split in splits:  # interpolation needs them: fail now, before anything is written
        beton = paths.beton_path(cfg_a.dataset, split, root)
        if not beton.exists():
            raise AlignmentError(f"{beton} is missing; build it with `lmc beton build {cfg_a.dataset}` "
                                 f"or pass --results DIR where the runs were trained")

    matching = permutations.weight_matching(spec, state_a, state_b, seed=seed)
    aligned = permutations.apply(spec, matching.perms, state_b)

    paths.check_layout(root)
    out = paths.aligned_run_dir(paths.aligned_name(run_a.name, run_b.name, seed), root)
    out.mkdir(parents=True, exist_ok=True)
    save_json(cfg_b.to_dict(), out / paths.CONFIG)
    final_b = checkpoints.load(run_b / paths.FINAL)
    checkpoints.save(out / paths.FINAL, {"config": cfg_b.to_dict(), "model": aligned, "epoch": final_b.get("epoch"),
                                         "step": final_b.get("step")})
    before, after = _distance(spec, state_a, state_b), _distance(spec, state_a, aligned)
    save_json(provenance(kind="aligned", run_a=str(run_a), run_b=str(run_b), alignment_seed=seed,
                         method="weight matching (Ainsworth et al. 2023)", sweeps=matching.sweeps,
                         gains=matching.gains, converged=matching.converged, distance_before=before,
                         distance_after=after,
                         permutations={k: v.tolist() for k, v in matching.perms.items()}), out / paths.PROVENANCE)

    common = dict(num_alphas=num_alphas, splits=splits, root=root, device=device, progress=progress,
                  allow_different=("init_seed",))
    _, bars_before = interpolate_runs(run_a, run_b, **common)
    _, bars_after = interpolate_runs(run_a, out, **common)
    return Alignment(out, matching, bars_before, bars_after, before, after)
