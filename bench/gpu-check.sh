#!/bin/sh
# The prepared GPU check (issue 14): on a host with an NVIDIA GPU (driver >= 580), a few minutes in all.
#   make gpu-check                     # or: sh bench/gpu-check.sh
# 1. A venv ($GPU_VENV, .venv-gpu) of the whole pinned tree with onnxruntime-gpu and its CUDA libraries
#    (requirements-gpu.lock) in place of onnxruntime; kept for the next run. GPU_PYTHON=/path/to/python uses an
#    environment that has them already instead.
# 2. The checks, each under a time limit, JSON under $OUT (out/): `bench gpu` (batch-64 embedding faces/s, batched
#    640x640 detection frames/s) on CUDA and, for the ratio, on this host's CPU; `bench capacity` (tracked ramp) on a
#    worker that requires CUDA. Every number is measured on the provider named: a CUDA provider that does not load
#    fails the check (exit 1) instead of measuring the CPU.
set -eu
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
GPU_VENV=${GPU_VENV:-.venv-gpu}
mkdir -p "$OUT"
if [ -n "${GPU_PYTHON:-}" ]; then
    PY=$GPU_PYTHON
else
    PY=$GPU_VENV/bin/python
    if [ ! -f "$GPU_VENV/.argusnet-gpu" ]; then
        "${PYTHON:-python3}" -m venv "$GPU_VENV"
        grep -v -i -E '^(onnxruntime|pytest|pytest-timeout|hypothesis|import-linter|playwright|kubernetes-validate)==' \
            requirements.lock > "$GPU_VENV/cpu-tree.lock"
        "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -r "$GPU_VENV/cpu-tree.lock" \
            -r requirements-gpu.lock
        "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
        touch "$GPU_VENV/.argusnet-gpu"
    fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu-device.txt" || true
cat "$OUT/gpu-device.txt"
"$PY" -c "import onnxruntime as o; p = o.get_available_providers(); print('onnxruntime', o.__version__, p); \
raise SystemExit(0 if 'CUDAExecutionProvider' in p else 'this onnxruntime has no CUDA provider')"
timeout 240 "$PY" -m argusnet bench gpu --json "$OUT/bench-gpu.json"
timeout 120 "$PY" -m argusnet bench gpu --provider cpu --json "$OUT/bench-gpu-cpu.json"
timeout 420 "$PY" -m argusnet bench capacity --only tracked --set runtime.require_provider=cuda --step-seconds 10 \
    --warmup 3 --json "$OUT/bench-capacity-gpu.json"
echo "gpu check done: $OUT/bench-gpu.json $OUT/bench-gpu-cpu.json $OUT/bench-capacity-gpu.json"
