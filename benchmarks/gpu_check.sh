#!/usr/bin/env bash
# GPU check: on a CUDA machine, run bench_train and bench_step on cuda with small sizes (a few minutes).
# Usage (repo root): bash benchmarks/gpu_check.sh
# Uses ./.venv if it already has a CUDA torch, else creates /tmp/sentinel-gpu-venv and installs
# torch (the CUDA wheel from PyPI) plus the few packages the model code imports.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

PY=""
for cand in .venv/bin/python python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    PY="$cand"; break
  fi
done
if [ -z "$PY" ]; then
  VENV=/tmp/sentinel-gpu-venv
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch numpy   # PyPI's Linux torch wheel bundles CUDA
  "$VENV/bin/pip" install -q -e . --no-deps
  "$VENV/bin/pip" install -q click pydantic PyYAML prometheus-client
  PY="$VENV/bin/python"
fi
"$PY" -c 'import torch; print("# torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

export PYTHONUNBUFFERED=1
timeout 300 "$PY" benchmarks/bench_train.py --device cuda --streams 4000 --history 2048 --epochs 2
timeout 300 "$PY" benchmarks/bench_step.py --device cuda --streams 10000,100000 --hidden 32,64 \
  --naive-streams 100 --naive-rounds 2 --max-gib 24
