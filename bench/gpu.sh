#!/usr/bin/env bash
# One short prepared run for a lent GPU machine (the `device` tool): the pipeline's own GPU
# stage (no Ray) on the paper-size model, with and without demucs in the stage; results as
# JSON in $OUT. demucs and julius (pure Python, absent there) travel in .gpu_pkgs/:
#   mkdir -p .gpu_pkgs && cp -r .venv/lib/python3.11/site-packages/{demucs,julius} .gpu_pkgs/
#   device run (carry .gpu_pkgs): bash bench/gpu.sh
# Under 8 minutes on an H100/H200: the stage (about 5), then the --quality presets with the
# fraction of the chip's dense bf16 peak (gpu_presets.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:.gpu_pkgs PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# DESIGNS=1: the sampling designs and per-encoder costs instead (gpu_designs.json)
python3 bench/bench_gpu_stage.py --size base --tracks "${TRACKS:-20}" --out "$OUT" ${DESIGNS:+--designs}
[ -n "${DESIGNS:-}" ] || python3 bench/bench_gpu_stage.py --size base --presets --tracks "${PRESET_TRACKS:-8}" --out "$OUT"
