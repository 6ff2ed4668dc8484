#!/usr/bin/env bash
# The prepared device check (scripts/gpu_check.py): run it first whenever a GPU is lent, then commit
# results/gpu_check_cuda.*, results/bench_encoder*_cuda.* and results/ttft_check_cuda.*. Its first two steps
# need torch and transformers only; the third (time to first token) needs the harness's packages: with
# .device-wheels/ present (make device-wheels; carry it to the lent machine) they are installed into a
# scratch folder ahead of the machine's own packages, and the step reads the clip that comes with them.
#   bash scripts/gpu_check.sh [--shapes real|tiny] [--device cuda|cpu] [--steps attention encoder ttft]
#                             [--out results] [--time-limit SECONDS]
# On a lent machine: --out "$OUT" --time-limit 420 (docs/benchmarks.md, "The GPU device check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
extra=()
if [ -d .device-wheels ] && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] == (3, 12))'; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-index --target "$site" .device-wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  extra=(--clip .device-wheels/bench_clip.mp4)
elif [ -d .device-wheels ]; then
  echo "gpu_check.sh: .device-wheels holds CPython 3.12 wheels; this Python is not 3.12: not installed" >&2
fi
"$PY" scripts/gpu_check.py "${extra[@]}" "$@"
