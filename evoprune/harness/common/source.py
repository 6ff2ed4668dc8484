"""Which code a result came from: a hash of the sources, and the checkout's commit."""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

from evoprune.harness.common.paths import REPO_ROOT

_PACKAGES = ("evoprune", "baselines")


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of every source file (.py, .yaml) of the `evoprune` and `baselines` packages."""
    digest = hashlib.sha256()
    for package in _PACKAGES:
        root = Path(__import__(package).__file__).resolve().parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when it has changes (informational only)."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None
