#!/usr/bin/env bash
# Create the project's virtual environment and install it: bash scripts/install_env.sh [VENV] [--latest]
#
# Default: exactly requirements.lock (pip --require-hashes --no-deps), then torch, then the project
# (editable, no build isolation: the locked setuptools builds it). --latest: the newest versions
# pyproject.toml's ranges allow instead (make check-latest), as an unlocked `pip install -e .` would.
# torch: on a CPU-only machine torch==2.13.0 (a local CPU wheel here); where python3 already has a CUDA
# torch the venv sees the system site-packages and keeps that torch (the lock holds no torch, nor
# torchvision, triton or the CUDA packages). PyPI's torchvision is a CUDA build that breaks
# `import lmms_eval.evaluator` on CPU-only torch ("torchvision::nms does not exist"); the locked install
# never installs it, --latest removes it when it does not import (transformers then uses its PIL
# image processors).
# Ends with what users run: a few samples of the trained tiny model through run.py (lmms-eval's
# simple_evaluate), into a scratch folder.
set -euo pipefail
venv=.venv
mode=locked
for arg in "$@"; do
    case "$arg" in
        --latest) mode=latest ;;
        -*) echo "error: unknown option $arg (accepted: --latest)" >&2; exit 2 ;;
        *) venv="$arg" ;;
    esac
done
quiet() { grep -v -e "^WARNING: Location 'file://" -e "^  WARNING: Location 'file://" || true; }

if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    python3 -m venv --system-site-packages "$venv"
    torch_pin="torch==$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')"
    echo "keeping the installed CUDA torch ($torch_pin)"
    install_torch=false
else
    python3 -m venv "$venv"
    torch_pin="torch==2.13.0"
    install_torch=true
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if [ "$mode" = locked ]; then
    echo "installing requirements.lock ($(grep -cE '^[A-Za-z0-9._-]+==' requirements.lock) packages, hashes checked)"
    "${pip[@]}" install -q --no-deps --require-hashes -r requirements.lock 2>&1 | quiet
    if $install_torch; then "${pip[@]}" install -q --no-deps "$torch_pin" 2>&1 | quiet; fi
    "${pip[@]}" install -q --no-deps --no-build-isolation -e . 2>&1 | quiet
    "$venv/bin/python" scripts/lock_diff.py --strict
else
    echo "$torch_pin" > "$venv/constraints.txt"
    echo "installing the newest versions pyproject.toml allows (with $torch_pin)"
    "${pip[@]}" install -q -c "$venv/constraints.txt" -e ".[dev]" 2>&1 | quiet
fi
if ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1 && "$venv/bin/python" -m pip show -q torchvision 2>/dev/null; then
    echo "removing torchvision: it does not import against this torch (PyPI ships a CUDA build)"
    "${pip[@]}" uninstall -q -y torchvision 2>&1 | quiet
fi
# pip check, less what the missing torchvision causes (lmms-eval and timm declare it; nothing we run needs it).
broken="$("${pip[@]}" check 2>&1 | grep -v -e "requires torchvision, which is not installed" -e "^No broken requirements" || true)"
if [ -n "$broken" ]; then
    echo "error: the installed packages do not fit together (pip check):" >&2
    echo "$broken" >&2
    exit 1
fi
"$venv/bin/python" -c "import transformers, torch; print('installed: torch', torch.__version__, '| transformers', transformers.__version__)"
echo "install check: 2 samples per task of the trained tiny model through run.py (lmms-eval's simple_evaluate)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if ! "$venv/bin/python" run.py model=tiny_llava_trained benchmark=shapes_image limit=2 progress=false \
        output_dir="$scratch" > "$scratch/check.log" 2>&1; then
    cat "$scratch/check.log" >&2
    echo "error: the install check failed: a tiny evaluation through run.py did not complete (its output is above)" >&2
    exit 1
fi
grep -E "^(task|shapes_[a-z]+|all) " "$scratch/check.log"
echo "environment ready ($venv)"
