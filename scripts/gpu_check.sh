#!/usr/bin/env bash
# The prepared device check (scripts/gpu_check.py): run it first whenever a GPU is lent, then commit
# results/gpu_check_cuda.* and results/bench_encoder*_cuda.*. Needs torch and transformers only.
#   bash scripts/gpu_check.sh [--shapes real|tiny] [--device cuda|cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
