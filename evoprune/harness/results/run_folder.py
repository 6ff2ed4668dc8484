"""Where a run's results live: ``<output_dir>/<model>/<benchmark>[-limit<n>][-compiled]/<pruner>-<budget>``.
Light on purpose (no torch, no lmms-eval): the renderers find runs with it."""

from __future__ import annotations

from pathlib import Path

from evoprune.harness.common.paths import REPO_ROOT

NATIVE_RUN = "none-all"


def run_name(cfg) -> str:
    """``<pruner>-<budget|all>``, the run's folder name."""
    return f"{cfg.pruner.name}-{'all' if cfg.budget is None else cfg.budget}"


def run_dir(cfg) -> Path:
    """``<output_dir>/<model>/<benchmark>[-limit<n>][-compiled]/<run_name>``: capped runs never share a folder
    with full ones, nor compiled runs with eager ones."""
    root = Path(cfg.output_dir)
    root = root if root.is_absolute() else REPO_ROOT / root
    limit = cfg.get("limit")
    suite = cfg.benchmark.name if limit is None else f"{cfg.benchmark.name}-limit{limit}"
    if cfg.get("runtime", "eager") != "eager":
        suite += f"-{cfg.runtime}"
    return root / cfg.model.name / suite / run_name(cfg)
