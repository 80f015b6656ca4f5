#!/usr/bin/env bash
# One short prepared run for a lent GPU machine (the `device` tool): the Ray-free core only,
# inputs generated in memory, results as JSON in $OUT. Under 5 minutes on an H100.
#   device run: bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 bench/bench_gpu.py --out "$OUT"
