"""Generated offline data folders (the smoke suites): written whole under a lock, regenerated when stale.

A folder is fresh when its ``manifest.json`` (written last) carries the generator's header (format
version, seed) and, when it lists ``files``, every one of them exists. Generation happens in a
temporary sibling folder that replaces the old one whole (`outputs.staged_directory`), under an
exclusive lock on the parent folder, so readers never see half-written data. It cannot detect files
edited by hand inside a fresh folder: pass ``force``. Also the palette and shapes both suites draw.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from evoprune.harness.common.outputs import staged_directory

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 0),
}


def ensure_folder(target: Path, header: dict, write: Callable[[Path], None], force: bool = False) -> Path:
    """Run ``write(staging)`` into a fresh copy of ``target`` unless ``target`` is fresh for ``header``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        if force or not is_fresh(target, header):
            with staged_directory(target) as staging:
                write(staging)
    return target


def read_manifest(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "manifest.json").read_text())


def is_fresh(data_dir: Path, header: dict) -> bool:
    """True when the folder's manifest carries ``header`` and every file it lists exists."""
    if not (data_dir / "manifest.json").is_file():
        return False
    manifest = read_manifest(data_dir)
    if any(manifest.get(key) != value for key, value in header.items()):
        return False
    return all((data_dir / name).is_file() for name in manifest.get("files", ()))


@contextmanager
def _locked(folder: Path):
    """Hold an exclusive flock on ``folder`` itself (no lock file to leave behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pick(rng: np.random.Generator, items):
    """One of ``items``, drawn by ``rng``."""
    items = list(items)
    return items[int(rng.integers(len(items)))]
