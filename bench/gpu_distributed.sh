#!/usr/bin/env bash
# More than one process on a GPU machine: nccl, one process per GPU, DDP and FSDP, throughput and resume.
# Not needed by the tests (they run gloo on the CPU). Run from the repository root:
#     bash bench/gpu_distributed.sh [ROWS] [EPOCHS]
# Prints, per strategy, the run's validation metrics and session seconds (run.json), then resumes each
# run in one process for one more epoch (a multi-process checkpoint continued at another world size).
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
ROWS=${1:-50000}
EPOCHS=${2:-3}
GPUS=$(nvidia-smi -L | wc -l)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" - "$WORK" "$ROWS" <<'PY'
import sys, polars as pl
from torchkeep.data.builtin import get_example
pl.read_parquet(get_example("flights").path).head(int(sys.argv[2])).write_parquet(f"{sys.argv[1]}/flights.parquet")
PY
echo "GPUs: $GPUS, rows: $ROWS, epochs: $EPOCHS"
for STRATEGY in ddp fsdp; do
  RUN="$WORK/run-$STRATEGY"
  "$PYTHON" -m torchkeep train --data "$WORK/flights.parquet" --target late --device cuda --nproc "$GPUS" \
      --strategy "$STRATEGY" --epochs "$EPOCHS" --batch-size 512 --run-dir "$RUN" --quiet >/dev/null
  "$PYTHON" - "$RUN" "$STRATEGY" "$ROWS" "$EPOCHS" "$GPUS" <<'PY'
import json, sys
run = json.load(open(f"{sys.argv[1]}/run.json"))
rows_per_s = int(sys.argv[3]) * 0.9 * int(sys.argv[4]) / run["seconds"]
print(f"{sys.argv[2]} x {sys.argv[5]} GPUs: {rows_per_s:,.0f} training rows/s (session {run['seconds']:.1f} s); valid {run['valid']}")
PY
  # fsdp keeps no checkpoints until sharded checkpoints land: its resume then starts over
  "$PYTHON" -m torchkeep train --resume "$RUN" --epochs $((EPOCHS + 1)) --quiet >/dev/null
  "$PYTHON" -c "import json, sys; run = json.load(open(sys.argv[1] + '/run.json')); print('  resumed in 1 process:', run['status'], run['valid'])" "$RUN"
done
