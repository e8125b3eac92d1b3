#!/usr/bin/env bash
# The GPU checks of the replica engine (issue 16), as one script that fits in 15 minutes on one
# H100/H200. Not run yet: no GPU was available when it was written (see docs/experiments.md).
#
#   LMC_DATA_ROOT=/path/to/datasets benchmarks/gpu_table1.sh [OUT_DIR]
#
# LMC_DATA_ROOT must hold mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (full MNIST);
# PYTHON (default .venv/bin/python) must be a CUDA build of torch with this project installed.
# Steps, each with its own time limit so that the script always ends with a report:
#   0. the replica engine's CUDA test (a batch is bitwise reproducible on the GPU, close to its
#      single runs, and isolates a diverging replica)                                (<= 1.5 min)
#   1. benchmarks/bench_replicas.py --device cuda: sequential trainer vs replica batches,
#      R = 1 4 16, 8-layer linear, width 512, batch 128, one epoch of mnist5k         (<= 3 min)
#   2. lmc reproduce table1 --scale paper --replicas auto --device cuda: all 24 cells, one seed
#      pair, 200 epochs, full MNIST, interpolation included (the issue's target: <= 10 min;
#      cut off at TABLE1_LIMIT_S, default 540 s; rerunning the command resumes it)   (<= 9 min)
# Total at most 13.5 minutes, which leaves the machine's start-up inside a 15-minute slot.
# Everything it prints is also written under OUT_DIR (default ./gpu_table1_out).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-${OUT:-gpu_table1_out}}
TABLE1_LIMIT_S=${TABLE1_LIMIT_S:-540}
BENCH_LIMIT_S=${BENCH_LIMIT_S:-180}
mkdir -p "$OUT"
export LMC_RESULTS="$OUT/results"

{
  echo "# GPU checks of the replica engine, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  git rev-parse HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/machine.txt"

echo "## 0. tests/test_replicas.py on CUDA" | tee "$OUT/tests.md"
timeout 90 "$PYTHON" -m pytest -q tests/test_replicas.py -k gpu 2>&1 | tail -5 | tee -a "$OUT/tests.md"

echo "## 1. bench_replicas.py --device cuda" | tee "$OUT/bench.md"
timeout "$BENCH_LIMIT_S" "$PYTHON" benchmarks/bench_replicas.py --device cuda --replicas 1 4 16 --pairs 2 \
  2> "$OUT/bench.err" | tee -a "$OUT/bench.md"
echo "bench exit code ${PIPESTATUS[0]} (124 = cut off at ${BENCH_LIMIT_S} s)" | tee -a "$OUT/bench.md"

echo "## 2. lmc reproduce table1 --scale paper --replicas auto --device cuda" | tee "$OUT/table1.md"
start=$(date +%s)
timeout "$TABLE1_LIMIT_S" "$PYTHON" -m app.cli reproduce table1 --scale paper --replicas auto --device cuda \
  --results "$LMC_RESULTS" 2> "$OUT/table1.err" | tee -a "$OUT/table1.md"
code=${PIPESTATUS[0]}
echo "table1 exit code $code after $(( $(date +%s) - start )) s (124 = cut off at ${TABLE1_LIMIT_S} s)" \
  | tee -a "$OUT/table1.md"
# What finished, even when cut off: runs done, and the replica batches' events.
"$PYTHON" - "$LMC_RESULTS" <<'EOF' | tee -a "$OUT/table1.md"
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
runs = sorted((root / "runs").glob("*/DONE")) if (root / "runs").exists() else []
print(f"runs finished: {len(runs)} of 48")
events = root / "reproduce" / "table1" / "paper" / "events.jsonl"
if events.exists():
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e.get("kind") == "batch":
            print(f"batch of {len(e['runs'])}: {e['status']}, {e['seconds']:.0f} s")
EOF
