"""Sweeps: experiment cells, the preflight that checks every run before the first starts.

Hydra's basic sweeper crosses its parameters (a Cartesian product), but a paper table is a list of
(pruner, budget) cells with one Native run. An experiment config therefore lists its cells once
(``experiment.cells``) and sweeps a single ``+cell`` parameter over them; each job then recomposes
its config with ``pruner=<name> budget=<budget>`` (`apply_cell`). A cell is written like a run
folder's name: ``<pruner>-<budget>``, ``none-all`` for Native.

`Preflight` is a Hydra callback: at the start of a multirun it expands the sweep exactly as the
basic sweeper does, composes every job's config and checks it (config values, weights on disk,
benchmark datasets), so a sweep of many hours fails at once, naming what is missing, instead of
at its tenth run. Both work with any launcher (the basic one in this process, or submitit). It also counts
the jobs as they end (`sweep_progress`: each run's "run k/n" and the sweep's ETA).
"""

from __future__ import annotations

import sys

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.evaluation.sweep_progress import job_ended, sweep_ended, sweep_started


def cells_override(*cell_lists) -> str:
    """The sweep value for ``+cell``: every list's cells in order (an OmegaConf resolver:
    ``${sweep_cells:${experiment.cells},${experiment.extra_cells}}``)."""
    return ",".join(str(cell) for cells in cell_lists for cell in cells)


if not OmegaConf.has_resolver("sweep_cells"):  # registered on import, in every process that composes
    OmegaConf.register_new_resolver("sweep_cells", cells_override)


def parse_cell(cell: str) -> tuple[str, str]:
    """``"evoprune-64"`` → ``("evoprune", "64")``; ``"none-all"`` → ``("none", "null")``."""
    pruner, sep, budget = str(cell).rpartition("-")
    if not sep or not pruner or not (budget == "all" or budget.isdigit()):
        raise ConfigError(f"cell={cell!r} is not <pruner>-<budget> (e.g. evoprune-64, or none-all for Native)")
    return pruner, "null" if budget == "all" else budget


def cell_overrides(task_overrides, cell: str) -> list[str]:
    """The job's overrides with ``+cell`` replaced by the cell's pruner and budget."""
    kept = [o for o in task_overrides if not o.lstrip("+~").startswith("cell=")]
    clashing = [o for o in kept if o.split("=", 1)[0].lstrip("+~") in ("pruner", "budget")]
    if clashing:
        raise ConfigError(
            f"{clashing} cannot be combined with an experiment's cells: each cell sets pruner and budget itself"
        )
    pruner, budget = parse_cell(cell)
    return [*kept, f"pruner={pruner}", f"budget={budget}"]


# Each job's config as `job_configs` composed it, by its final overrides: a job of this process reuses it
# instead of composing again (a compose of an experiment takes ~0.07 s; Table 1 has 31 jobs).
_composed_jobs: dict[tuple[str, ...], DictConfig] = {}


def apply_cell(cfg: DictConfig) -> DictConfig:
    """Inside a Hydra job: ``cfg`` recomposed for its ``cell`` (unchanged when it has none)."""
    if cfg.get("cell") is None:
        return cfg
    hydra_cfg = HydraConfig.get()
    overrides = cell_overrides(list(hydra_cfg.overrides.task), cfg.cell)
    composed = _composed_jobs.get(tuple(overrides))
    return composed if composed is not None else compose(hydra_cfg.job.config_name, overrides=overrides)


def _cell_of(overrides) -> str | None:
    """The value of a ``+cell=`` override among ``overrides``, if any."""
    cells = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith("cell=")]
    return cells[-1] if cells else None


def job_configs(config: DictConfig) -> list[DictConfig]:
    """Every job of the multirun ``config`` describes, composed as its run will see it (and kept for it)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    composed = []
    for overrides in jobs:
        cell = _cell_of(overrides)
        if cell is None:
            cfg = compose(config.hydra.job.config_name, overrides=list(overrides))
            cell = cfg.get("cell")
        if cell is not None:
            overrides = cell_overrides(overrides, cell)
            cfg = compose(config.hydra.job.config_name, overrides=overrides)
        _composed_jobs[tuple(overrides)] = cfg
        composed.append(cfg)
    return composed


def experiment_jobs(config_dir: str, overrides: list[str]) -> tuple[DictConfig, list[DictConfig]]:
    """The composed config of ``python run.py -m <overrides>`` and its jobs; it must name an experiment."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        if cfg.get("experiment") is None:
            raise ConfigError("name an experiment to render, e.g. +experiment=table1 (see configs/experiment/)")
        return cfg, job_configs(cfg)


def renderer_main(render, description: str, default_root, argv: list[str] | None = None) -> int:
    """Command line of the experiment renderers: ``<sweep overrides> [--tables-dir] [--figures-dir]``,
    calling ``render(overrides, tables_dir, figures_dir)``; exit 2 with one ``error:`` line on a ConfigError."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="+", help="the sweep's overrides, e.g. +experiment=table1 limit=50")
    parser.add_argument("--tables-dir", type=Path, default=Path(default_root) / "results" / "tables")
    parser.add_argument("--figures-dir", type=Path, default=Path(default_root) / "results" / "figures")
    args = parser.parse_args(argv)
    try:
        render(args.overrides, args.tables_dir, args.figures_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _first_of_each(configs: list[DictConfig], group: str) -> list[DictConfig]:
    """The first of ``configs`` with each distinct ``<group>.name`` (e.g. one per model)."""
    firsts: dict[str, DictConfig] = {}
    for cfg in configs:
        firsts.setdefault(cfg[group].name, cfg)
    return list(firsts.values())


def preflight(configs: list[DictConfig]) -> None:
    """Check every run's config, then weights, then datasets, each step for every run before the next, heavier
    one (a bad value fails before the model code and lmms-eval are imported); the first problem raises."""
    from evoprune.harness.evaluation.settings import check_config
    from evoprune.harness.inference.pruning import build_pruner, locate_pruner_weights

    for cfg in configs:
        check_config(cfg)
        build_pruner(cfg.pruner, cfg.budget)
    from evoprune.harness.models.weights import locate_weights

    for cfg in _first_of_each(configs, "model"):
        locate_weights(cfg.model)
    for cfg in configs:
        locate_pruner_weights(cfg.pruner)
    from evoprune.harness.evaluation.runner import load_tasks, quiet_lmms_eval
    from evoprune.harness.results.judge import JudgeConfig, plan_tasks

    for cfg in _first_of_each(configs, "benchmark"):
        quiet_lmms_eval(cfg.log_level)
        load_tasks(cfg.benchmark, cfg.model, plan_tasks(cfg.benchmark.tasks, JudgeConfig.resolve(cfg.judge)))


try:  # the callback base class moved between Hydra versions
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    from hydra.experimental.callbacks import Callback  # type: ignore[no-redef]


class Preflight(Callback):
    """Hydra callback: `preflight` of every job before a multirun launches any of them; counts the jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from evoprune.harness.common.errors import DataUnavailableError, ModelUnavailableError

        try:
            configs = job_configs(config)
            print(f"preflight: checking {len(configs)} run(s)", file=sys.stderr)
            preflight(configs)
        except (ConfigError, ModelUnavailableError, DataUnavailableError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_started(len(configs))

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        job_ended()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_ended()
