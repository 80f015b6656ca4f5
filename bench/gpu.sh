#!/usr/bin/env bash
# One short prepared run for a lent GPU machine (the `device` tool): the pipeline's own GPU
# stage (no Ray) on the paper-size model; results as JSON in $OUT. demucs and julius (pure
# Python, absent there) travel in .gpu_pkgs/:
#   mkdir -p .gpu_pkgs && cp -r .venv/lib/python3.11/site-packages/{demucs,julius} .gpu_pkgs/
#   device run (carry .gpu_pkgs): bash bench/gpu.sh
# Three passes, most wanted first, each under its own time limit so that one running long
# cannot cost the others (8 minutes in all on an H100/H200):
#   1. the speed levers, a row each (gpu_levers.json): SDPA kernels, --compile on/graphs,
#      pinned copies, demucs batched and under bf16, with the fraction of dense bf16 peak;
#   2. the --quality presets (gpu_presets.json): tracks/GPU-hour, provided stems and demucs
#      separating (PRESET_TRACKS tracks per call), with COMPILE (off|on|graphs);
#   3. the stage at the paper's settings (gpu_stage.json): provided stems, demucs one track
#      per call, --window whole, against the bare forward limit.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:.gpu_pkgs PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
status=0
timeout "${LEVERS_S:-180}" python3 bench/bench_gpu_stage.py --size "${SIZE:-base}" --levers --out "$OUT" || status=$?
timeout "${PRESETS_S:-150}" python3 bench/bench_gpu_stage.py --size "${SIZE:-base}" --presets --tracks "${PRESET_TRACKS:-8}" \
  --demucs-batch "${PRESET_TRACKS:-8}" --compile "${COMPILE:-off}" --out "$OUT" || status=$?
timeout "${STAGE_S:-150}" python3 bench/bench_gpu_stage.py --size "${SIZE:-base}" --tracks "${TRACKS:-10}" --out "$OUT" \
  ${DESIGNS:+--designs} || status=$?
exit $status
