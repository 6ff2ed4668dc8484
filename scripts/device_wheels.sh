#!/usr/bin/env bash
# What the device check's TTFT step (scripts/ttft_check.py) needs on a lent GPU machine, which has Python 3.12,
# its own torch and transformers, and no network: this repo's locked transformers with its dependencies,
# omegaconf, hydra-core, pillow and decord as CPython 3.12 x86-64 Linux wheels (numpy left out: the machine has
# it), and the video clip the step reads (written here with PyAV). Into .device-wheels/ (git-ignored): carry it, and
# scripts/gpu_check.sh installs the wheels into a scratch folder ahead of the machine's packages.
#   bash scripts/device_wheels.sh        (make device-wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# what the TTFT step imports beyond the machine's packages (tests/test_gpu_check.py runs the step with only these)
WHEELS="transformers pillow decord" # with their dependencies
WHEELS_NO_DEPS="omegaconf hydra-core" # build_pruner instantiates with hydra; their dependency antlr4: below
out=.device-wheels
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/ *\\$//' >"$constraints"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux2010_x86_64; do
  platforms+=(--platform "$tag")
done
"$PY" -m pip download --quiet --disable-pip-version-check -c "$constraints" --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 "${platforms[@]}" -d "$out.tmp" $WHEELS
"$PY" -m pip download --quiet --disable-pip-version-check -c "$constraints" --no-deps -d "$out.tmp" $WHEELS_NO_DEPS
# the antlr4 runtime (omegaconf's and hydra's) is published as a source archive only: built here (pure Python)
"$PY" -m pip wheel --quiet --disable-pip-version-check -c "$constraints" --no-deps -w "$out.tmp" antlr4-python3-runtime
rm -f "$out.tmp"/numpy-*.whl
"$PY" - "$out.tmp" <<'PY'
import shutil, sys
from pathlib import Path

sys.path.insert(0, ".")
from evoprune.harness.benchmarks.latency_models import MODELS, sample_visual

clip = sample_visual(MODELS["llava_video"], Path(sys.argv[1]))
shutil.move(clip, Path(sys.argv[1]) / "bench_clip.mp4")
PY
rm -rf "$out"
mv "$out.tmp" "$out"
du -sh "$out"
