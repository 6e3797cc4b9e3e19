#!/usr/bin/env bash
# The GPU check for a short window on a lent GPU machine: writes docs/gpu-check.md section by section.
#   bench/gpu_check.sh [--wheels DIR] [--data-root DIR] [--out FILE] [other `python -m bench.gpu_check` flags]
# --wheels DIR installs missing pure-Python packages offline from DIR first. Without a GPU it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) "$PY" -m pip install -q --no-index --no-deps --find-links "$2" "$2"/*.whl || exit 1; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check."
  exit 0
fi
timeout 360 "$PY" -m bench.gpu_check "${args[@]}"
# Fused seeds against separate runs on the GPU (K = 1 and 8, MNIST shape): docs/bench-fused-gpu.txt.
timeout 110 "$PY" -m bench.fused --device cuda --ks 1 8 --steps 20 --rounds 1 --datasets mnist \
  --out docs/bench-fused-gpu.txt
