"""Where a multirun of this process stands (Hydra's basic launcher runs its jobs here one after another): the
job count, when it started and how many jobs ended, for a run's "run k/n" label and the sweep's ETA."""

from __future__ import annotations

import time

from hydra.core.hydra_config import HydraConfig

_sweep: dict = {}


def sweep_started(total: int) -> None:
    _sweep.update(total=total, started=time.monotonic(), ended=0)


def job_ended() -> None:
    if _sweep:
        _sweep["ended"] += 1


def progress_label(folder_name: str) -> str | None:
    """``run k/n: <folder_name>`` and the sweep's remaining time (its mean time per ended job so far, times the
    jobs not ended) inside a multirun of this process; None outside one."""
    if not _sweep or not HydraConfig.initialized():
        return None
    label = f"run {HydraConfig.get().job.num + 1}/{_sweep['total']}: {folder_name}"
    if _sweep["ended"]:
        left = (time.monotonic() - _sweep["started"]) / _sweep["ended"] * (_sweep["total"] - _sweep["ended"])
        label += f", sweep ETA {left / 60:.0f} min" if left >= 60 else f", sweep ETA {left:.0f} s"
    return label


def sweep_ended() -> None:
    _sweep.clear()
