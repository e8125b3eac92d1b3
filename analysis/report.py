"""Write an artefact's tables and figures, its summary, and REPRODUCTION.md (pandas, never torch).

Per sweep (``<results>/reproduce/<grid>/<scale>/``): ``results.parquet`` (one row per pair and
split), one ``<artefact>.{csv,md,tex}`` per table (CSV: the tidy numbers with the ``paper``
column; Markdown and LaTeX: the paper's layout, cells "ours ± std [paper]", with 95% bootstrap
intervals when the sweep has two or more seed pairs; ``analysis.tables.write_table``), figures
as PNG and PDF, and ``summary.json`` (scale, seeds, data actually used, hardware, wall time of
every invocation). ``lmc report`` gathers every summary into ``<results>/REPRODUCTION.md``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from analysis import artefacts, figures
from analysis.tables import Table
from lmc.io import atomic_write_text

SUMMARY = "summary.json"
# The order of the paper, for the report.
ORDER = ("table1", "table2", "table3", "table4", "figure1", "figure2", "figure3", "figure5", "alignment")


def build_outputs(layout: str, axes: list[str], outputs: list[str], df: pd.DataFrame, curves: pd.DataFrame,
                  out: Path, intervals: bool = False, known_gaps: dict | None = None) -> tuple[list[Table], list[Path]]:
    """The tables and figures of one sweep, by the grid's layout; ``intervals``: 95% bootstrap
    intervals over the seed pairs in every barrier table (needs two or more pairs per cell);
    ``known_gaps``: cell -> the likely reason, added to the note of a cell that lands off the paper."""
    tables, figs = _tables_and_figures(layout, axes, outputs, df, curves, out, intervals)
    for table in tables:
        table.notes[:] = [with_reason(note, known_gaps or {}) for note in table.notes]
    return tables, figs


def with_reason(note: str, known_gaps: dict) -> str:
    """A note on a cell off the paper ("<cell> (<split>): ours ... other side / outside a factor
    of 2 ..."), with the grid's likely reason for that cell appended."""
    if "other side of the 2% line" not in note and "outside a factor of 2" not in note:
        return note
    cell = note.split(": ", 1)[0].rsplit(" (", 1)[0]
    return f"{note}; likely: {known_gaps[cell]}" if cell in known_gaps else note


def _tables_and_figures(layout: str, axes: list[str], outputs: list[str], df: pd.DataFrame, curves: pd.DataFrame,
                        out: Path, intervals: bool) -> tuple[list[Table], list[Path]]:
    tables, figs = [], []
    if layout == "table1":
        tables.append(artefacts.table1(df, intervals))
    elif layout == "table2":
        tables.append(artefacts.table2(df, intervals))
    elif layout == "figure1":
        tables.append(artefacts.figure_table("figure1", df, axes, "error_barrier_pct", intervals))
        figs += figures.barrier_vs_slope(df, out / "figure1")
    elif layout == "figure2":
        tables.append(artefacts.figure_table("figure2", df, axes, "error_barrier_pct", intervals))
        figs += figures.barrier_per_layer(df, out / "figure2")
    elif layout in ("figure3", "figure5"):
        tables.append(artefacts.figure_table(layout, df, axes, "normalized_barrier_pct", intervals))
        figs += figures.normalized_per_dataset(df, out / layout)
        if "table4" in outputs:
            tables.append(artefacts.table4(df))
    elif layout == "alignment":  # rows: the grid's first axis; columns: before/after alignment x split
        tables.append(artefacts.figure_table(outputs[0], df, axes + ["alignment"], "error_barrier_pct", intervals))
        figs += figures.barrier_before_after_alignment(df, out / outputs[0], x=axes[0])
    elif layout == "ablation":  # rows: settings; columns: Table 2's cells; the settings ranked
        tables.append(artefacts.ablation(df, axes, intervals))
    else:  # a user's own grid: the barrier per cell
        tables.append(artefacts.figure_table(outputs[0], df, axes, "error_barrier_pct", intervals))
    if layout == "alignment" and not curves.empty:
        figs += figures.interpolation_curves(curves, out / "curves", hue="alignment", col=axes[0])
    elif not curves.empty and layout != "ablation":  # 96 cells: the curves would be unreadable
        hue, col = (axes[0], axes[-1]) if len(axes) > 1 else (axes[0], None)
        figs += figures.interpolation_curves(curves, out / "curves", hue=hue, col=col)
    return tables, figs


def update_summary(out: Path, fields: dict, invocation: dict | None) -> dict:
    """Merge ``fields`` into ``summary.json`` and append this invocation (wall time, executor)."""
    from lmc import paths
    from lmc.io import exclusive_lock

    path = out / SUMMARY
    # Read-modify-write under a lock: two sweeps finishing together must both be recorded.
    with exclusive_lock(paths.lock_path(path)):
        summary = json.loads(path.read_text()) if path.exists() else {"invocations": []}
        summary.update(fields)
        if invocation:
            summary["invocations"].append(invocation)
        summary["updated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def hardware(run_names: list[str], root=None) -> dict:
    """The machine of this process, and the devices and thread counts the runs recorded."""
    from lmc import paths
    from lmc.provenance import machine, versions

    devices, threads = set(), set()
    for name in run_names:
        prov = paths.run_dir(name, root) / paths.PROVENANCE
        if prov.exists():
            p = json.loads(prov.read_text())
            gpu = p.get("gpu")  # the accelerator's name, recorded by runs on CUDA
            devices.add(f"{p.get('device')} ({gpu})" if gpu else str(p.get("device")))
            threads.add(str(p.get("torch_threads")))
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {**machine(), "cpu_model": cpu, "devices": sorted(devices), "torch_threads": sorted(threads),
            "versions": versions()}


def _artefact_sort(summary: dict) -> tuple:
    first = summary.get("artefacts", ["~"])[0]
    return (ORDER.index(first) if first in ORDER else len(ORDER), first, summary.get("scale", ""))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _invocation(i: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.get("started", 0)))
    return (f"{_minutes(i.get('wall_s', 0))} ({i.get('executor', '?')} x{i.get('jobs', '?')}, "
            f"{i.get('runs_trained', 0)} runs trained, started {started})")


def _section(s: dict, here: Path) -> list[str]:
    inv = s.get("invocations", [])
    hw = s.get("hardware", {})
    cpu = hw.get("cpu_model") or hw.get("processor")
    devices = ", ".join(hw.get("devices", [])) or "–"
    threads = ", ".join(hw.get("torch_threads", [])) or "–"
    lines = [f"## {s.get('title', s.get('grid'))} — scale `{s.get('scale')}`", "",
             f"- command: `{s.get('command')}`",
             f"- grid: `{s.get('grid_file')}` (sha256 {str(s.get('grid_sha256'))[:12]}); scale: {s.get('notes')}",
             f"- seed pairs per cell: {s.get('seeds')}; pairs finished: {s.get('ok')}/{s.get('tasks')}"
             + (f"; **failed: {len(s['failed'])}**" if s.get("failed") else ""),
             f"- hardware: {cpu}, {hw.get('cpus')} CPU(s), {hw.get('platform')}; device(s) {devices}; "
             f"torch threads per run {threads}",
             "- wall time per invocation (data, training, interpolation, tables, figures): "
             + "; ".join(_invocation(i) for i in inv)
             + f"; training time summed over this table's runs: {_minutes(s.get('train_seconds', 0))}"]
    if s.get("data"):
        lines += ["- data actually used:"]
        for d in s["data"].values():
            note = f" ({d['train_note']})" if d.get("train_note") else ""
            lines.append(f"  - `{d['dataset']}`: {d['train']} train / {d['test']} test images "
                         f"{tuple(d['image_shape'])}, {d['num_classes']} classes; train split from "
                         f"{', '.join(d['train_sources'])}{note}")
    for name, why in (s.get("skipped_data") or {}).items():
        lines.append(f"- **not run, data missing** — `{name}`: {why}")
    for f in s.get("failed", []):
        lines.append(f"- **failed** {f.get('cell')} pair {f.get('pair')}: {f.get('error')}")
    legend = "ours ± std across pairs, 95% bootstrap CI [paper]" if s.get("intervals") else \
        "ours ± std across pairs [paper]"
    for name, md in s.get("tables", {}).items():
        lines += ["", f"### {name} ({legend})", "", md.rstrip()]
    for fig in (Path(f) for f in s.get("figures", []) if f.endswith(".png")):
        rel = fig.resolve().relative_to(here.resolve()) if fig.resolve().is_relative_to(here.resolve()) else fig
        lines += ["", f"![{fig.stem}]({rel})"]
    return lines + [""]


def write_reproduction(root=None) -> Path:
    """``<results>/REPRODUCTION.md``: every artefact produced so far, ours beside the paper's."""
    from lmc import paths
    from lmc.provenance import git_revision
    from lmc.paths import report_path, reproduce_dir

    results = paths.results_root(root)
    summaries = [json.loads(p.read_text()) for p in sorted(reproduce_dir(root).glob(f"*/*/{SUMMARY}"))]
    summaries.sort(key=_artefact_sort)
    produced = {a for s in summaries for a in s.get("artefacts", [])}
    lines = ["# Reproduction of *Disentangling Linear Mode Connectivity* (Altıntaş et al., arXiv 2312.09832)", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from `{results}` at git revision {git_revision()}. "
             "Cells read \"ours ± std across seed pairs [the paper's number]\"; barriers are 100·B in percent; "
             "a pair is *linearly mode-connected* when its barrier is below 2%. Every number below was measured "
             "by the commands shown; nothing is estimated.", ""]
    missing = [a for a in ORDER if a not in produced]
    if missing:
        lines += [f"Not produced yet: {', '.join(missing)} (`lmc reproduce NAME --scale quick`).", ""]
    for s in summaries:
        lines += _section(s, results)
    path = report_path(root)
    atomic_write_text(path, "\n".join(lines))
    return path
