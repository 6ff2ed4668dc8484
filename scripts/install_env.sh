#!/usr/bin/env bash
# Create the project's virtual environment (default .venv) and install the project into it.
# CPU-only machine: torch==2.13.0 (a local CPU wheel here). Machine whose python3 already has a
# CUDA torch: the venv sees the system site-packages and that torch is kept, pinned as is.
# PyPI's torchvision is a CUDA build that breaks `import lmms_eval.evaluator` on CPU-only torch
# ("torchvision::nms does not exist"); when it does not import, it is removed (transformers then
# uses its PIL image processors).
set -euo pipefail
venv="${1:-.venv}"
quiet() { grep -v "^WARNING: Location 'file://" || true; }

if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    python3 -m venv --system-site-packages "$venv"
    torch_pin="torch==$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')"
    echo "keeping the installed CUDA torch ($torch_pin)"
else
    python3 -m venv "$venv"
    torch_pin="torch==2.13.0"
    "$venv/bin/pip" install "$torch_pin" 2>&1 | quiet
fi
echo "$torch_pin" > "$venv/constraints.txt"
"$venv/bin/pip" install -c "$venv/constraints.txt" -e ".[dev]" 2>&1 | quiet
if ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    echo "removing torchvision: it does not import against this torch (PyPI ships a CUDA build)"
    "$venv/bin/pip" uninstall -y torchvision 2>&1 | quiet
fi
"$venv/bin/python" -c "import lmms_eval.evaluator, transformers, torch; print('environment ready: torch', torch.__version__, '| transformers', transformers.__version__)"
