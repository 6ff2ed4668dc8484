"""Where the checkout's folders are: the harness reads its configs and writes its results beside the package
(an editable install or a checkout; a wheel without ``configs/`` has no runs to make)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO_ROOT / "configs"
RESULTS_DIR = REPO_ROOT / "results"
