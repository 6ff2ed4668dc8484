"""One run: check config → load tasks → load model → evaluate through lmms-eval → write results.

Everything that can fail on bad input (config values, missing datasets, missing weights) fails in
that order, before the next heavier step starts. Evaluation goes through lmms-eval's Python API
(`simple_evaluate` with a model instance) because its CLI exits 0 when evaluation fails.

Runs resume (`resume.py`): a complete run of the same config and code is skipped, an interrupted
one continues from its journal. One process at a time writes a run folder (`run_lock.py`). When
lmms-eval's scoring or aggregation raises after the answers, the answers are kept beside the journal
and the run stays incomplete (`RunStopped`); Ctrl-C becomes `RunInterrupted`, which says how far the
run got. Within one process (a Hydra multirun with the basic launcher) lmms-eval's task index and the
last loaded model are kept between runs.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from evoprune.harness.common.errors import ConfigError, DataUnavailableError
from evoprune.harness.common.machine_load import load_warning, machine_load, snapshot
from evoprune.harness.common.outputs import staged_directory, write_json, write_jsonl, write_text
from evoprune.harness.common.paths import REPO_ROOT
from evoprune.harness.common.run_lock import check_not_held, run_folder_lock
from evoprune.harness.data.real_data import check_local_data, local_task_configs, task_data
from evoprune.harness.evaluation.lmms_model import PrunedLlava
from evoprune.harness.evaluation.settings import check_config, check_device
from evoprune.harness.evaluation.sweep_progress import progress_label
from evoprune.harness.inference.pruning import Pruner, build_pruner, locate_pruner_weights
from evoprune.harness.inference.runtime import build_runtime
from evoprune.harness.models.loading import LoadedModel, load_model, resolve_dtype
from evoprune.harness.models.weights import locate_weights
from evoprune.harness.results.judge import JudgeConfig, JudgePlan, plan_tasks, summarize_results
from evoprune.harness.results.report import latency_summary, relative_latency, render_summary
from evoprune.harness.results.resume import PARTIAL, RUN_RECORD, RunPlan, completion_record, plan_run, redacted_config
from evoprune.harness.results.run_folder import NATIVE_RUN, run_dir, run_name
from evoprune.harness.results.video_metrics import derived_metrics


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@lru_cache(maxsize=4)
def task_manager(include_path: str | None, include_defaults: bool, prompt_variant: str | None):
    """lmms-eval's task index (slow to build: it parses every task YAML), once per process.

    ``prompt_variant``: the lmms-eval model name whose ``lmms_eval_specific_kwargs`` the tasks use
    (e.g. ``llava_vid``: Video-MME then ends its prompt with "The best answer is:"); None = ``default``.
    """
    from lmms_eval.tasks import TaskManager

    return TaskManager(
        verbosity="WARNING", include_path=include_path, include_defaults=include_defaults, model_name=prompt_variant
    )


def benchmark_task_manager(benchmark_cfg, model_cfg):
    """The cached task index for ``benchmark_cfg`` (its include_path, with or without built-ins), with
    the model's task prompt variant."""
    include_path = benchmark_cfg.include_path
    if include_path is not None:
        include_path = str(REPO_ROOT / include_path)
    variant = model_cfg.get("lmms_eval_prompts")
    return task_manager(include_path, bool(benchmark_cfg.lmms_eval_builtin_tasks), variant)


def leaf_tasks(task_dict: dict) -> dict:
    """``{name: Task}`` for every task in lmms-eval's task dict, groups (e.g. MVBench's 20) flattened."""
    leaves = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            leaves.update(leaf_tasks(value))
        else:
            leaves[key] = value
    return leaves


def load_tasks(benchmark_cfg, model_cfg, plan: JudgePlan) -> dict:
    """lmms-eval task objects for the benchmark (datasets loaded now, before the model), groups flattened.

    The judge plan decides how judged tasks are built and sets the env vars lmms-eval reads
    while it loads them.
    """
    from lmms_eval.tasks import get_task_dict

    if benchmark_cfg.synthetic_data is not None:
        from hydra.utils import call

        call(benchmark_cfg.synthetic_data)
    manager = benchmark_task_manager(benchmark_cfg, model_cfg)
    names = list(benchmark_cfg.tasks)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"benchmark.tasks has unknown lmms-eval task(s) {unknown}; include_path={benchmark_cfg.include_path}"
        )
    root = data_root(benchmark_cfg)
    with plan.environment():  # lmms-eval reads the judge's variables when it imports a task's code
        tasks = plan.tasks
        if root is not None:
            found = task_data(benchmark_cfg, manager, root)
            tasks = local_task_configs(tasks, found, check_local_data(found, root))
        try:
            return leaf_tasks(get_task_dict(tasks, manager))
        except Exception as err:
            advice = (
                f"The local copy at {root} (data.root) has the files, but lmms-eval could not read them."
                if root is not None
                else f"They come from the Hugging Face Hub ({hub_repositories(benchmark_cfg, manager)}) or its cache; "
                "on a machine without Hub access, point data.root at a local copy (python scripts/download_data.py "
                "lists what to fetch), or run the generated benchmark=smoke_image."
            )
            raise DataUnavailableError(
                f"Could not load the datasets of benchmark {benchmark_cfg.name!r} ({names}): {type(err).__name__}: "
                f"{err}\n{advice}"
            ) from err


def hub_repositories(benchmark_cfg, manager) -> str:
    """``repo: its tasks; …`` for lmms-eval's built-in tasks (the real benchmarks); for a suite of its own
    task YAMLs, where to look instead."""
    if not benchmark_cfg.get("lmms_eval_builtin_tasks"):
        return "the tasks' dataset_path"
    by_repo: dict[str, list[str]] = {}
    for data in task_data(benchmark_cfg, manager, Path(".")):
        by_repo.setdefault(data.repo, []).append(data.entry)
    return "; ".join(f"{repo}: {', '.join(dict.fromkeys(entries))}" for repo, entries in by_repo.items())


def data_root(benchmark_cfg) -> Path | None:
    """The benchmark's local copy (``benchmark.data_root``, by default ``data.root``; relative paths from the
    repository), or None: the Hub or its cache."""
    root = benchmark_cfg.get("data_root")
    if root is None:
        return None
    root = Path(root).expanduser()
    return root if root.is_absolute() else REPO_ROOT / root


def join_records(
    model_records, logged_samples: dict[str, list[dict]], metric_names: dict[str, list[str]]
) -> list[dict]:
    """Per-sample rows: the model's record plus lmms-eval's target and per-sample metric values."""
    logged = {(task, int(s["doc_id"])): s for task, samples in logged_samples.items() for s in samples}
    rows = []
    for record in model_records:
        row = record.to_dict()
        sample = logged.get((record.task, record.doc_id), {})
        row["target"] = sample.get("target")
        row["score"] = {name: sample[name] for name in metric_names.get(record.task, []) if name in sample}
        rows.append(row)
    return rows


def task_metrics(results: dict, rows: list[dict], plan: JudgePlan) -> dict:
    """Per-task metrics (judge policy applied) with sample and error counts."""
    tasks = {}
    for task, metrics in summarize_results(results, plan.judge).items():
        task_rows = [row for row in rows if row["task"] == task]
        tasks[task] = {
            "metrics": metrics,
            "samples": len(task_rows),
            "errors": sum(row["error"] is not None for row in task_rows),
        }
        if task in plan.notes:
            tasks[task]["note"] = plan.notes[task]
    errors = sum(row["error"] is not None for row in rows)
    return {
        "tasks": tasks,
        "samples": len(rows),
        "errors": errors,
        "note": "samples with errors are scored wrong by lmms-eval; their reasons are in samples.jsonl",
    }


def _native_comparison(cfg, latency_meta: dict) -> tuple[dict | None, str | None]:
    """The native run's latency, when one exists for the same model, benchmark, device and limit."""
    if run_name(cfg) == NATIVE_RUN:
        return None, "this is the native run"
    path = run_dir(cfg).parent / NATIVE_RUN / "latency.json"
    if not path.exists():
        return None, f"no native run at {path}"
    native = json.loads(path.read_text())
    mismatched = [k for k in ("device", "dtype", "limit") if native["meta"].get(k) != latency_meta[k]]
    if mismatched:
        return None, f"native run at {path} differs in {mismatched}: not comparable"
    return native, None


_loaded_model: dict[str, LoadedModel] = {}


def cached_model(model_cfg, device, dtype, seed: int) -> LoadedModel:
    """`load_model`, keeping the last model loaded in this process for the next run that asks for it.

    Pruners patch in `attach` and restore in `detach`, so a kept model is the pristine one.
    Before a new model loads, the old one is collected (reference cycles included) and every object alive then
    (the imported modules, the task index) is frozen out of the garbage collector's sight: lmms-eval calls
    `gc.collect()` twice after each run, and a full collection over the ~500k objects torch, transformers and
    lmms-eval import takes a quarter second (it doubled the time of Table 1's 31-run smoke sweep). No model
    is ever frozen, so dropping one still frees it.
    """
    key = json.dumps([OmegaConf.to_container(model_cfg, resolve=True), str(device), str(dtype), seed], sort_keys=True)
    if key not in _loaded_model:
        _loaded_model.clear()  # hold at most one model (a 7B one fills a GPU)
        gc.collect()
        gc.freeze()
        _loaded_model[key] = load_model(model_cfg, device, dtype, seed)
    return _loaded_model[key]


def quiet_lmms_eval(level: str) -> None:
    """lmms-eval logs through loguru at DEBUG by default; keep the console to ``level`` and up. Its progress
    bars (building each task's requests, post-processing its answers) are shown at DEBUG only: the run's own
    bar counts the samples."""
    import lmms_eval.api.task
    import lmms_eval.evaluator
    from loguru import logger
    from tqdm import tqdm

    logger.remove()
    logger.add(sys.stderr, level=level)
    shown = level.upper() == "DEBUG"
    for module in (lmms_eval.api.task, lmms_eval.evaluator):
        module.tqdm = tqdm if shown else _hidden_tqdm


def _hidden_tqdm(*args, **kwargs):
    from tqdm import tqdm

    return tqdm(*args, **{**kwargs, "disable": True})


def _skip(plan: RunPlan) -> int:
    """A complete run is not run again: its stored summary is printed again, then why."""
    record = plan.complete
    errors = f", {record['errors']} sample error(s)" if record["errors"] else ""
    summary = plan.folder / "summary.txt"
    if summary.exists():
        print(summary.read_text().rstrip("\n"))
    print(
        f"complete: {plan.folder} ({record['samples']} samples{errors}, finished {record['completed_at']}) "
        "— skipped, its summary above; resume=false recomputes it"
    )
    return 1 if record["errors"] else 0


def load_pruned_model(cfg, pruner: Pruner) -> tuple[LoadedModel, torch.device, torch.dtype]:
    """Seed, load (or reuse) the configured model on its device and dtype, check its visual token
    count against the config, and attach ``pruner`` (a ValueError from ``attach`` is a ConfigError)."""
    _seed_everything(cfg.seed)
    device = check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    loaded = cached_model(cfg.model, device, dtype, cfg.seed)
    if loaded.num_visual_tokens != cfg.model.num_visual_tokens:
        raise ConfigError(
            f"model.num_visual_tokens={cfg.model.num_visual_tokens} but the loaded model feeds "
            f"{loaded.num_visual_tokens} visual tokens per image; fix configs/model/{cfg.model.name}.yaml"
        )
    try:
        pruner.attach(loaded.model)
    except ValueError as err:  # e.g. a schedule window the model's layer count cannot hold
        raise ConfigError(f"pruner {cfg.pruner.name!r}: {err}") from err
    return loaded, device, dtype


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; its message says how far the run got and how to resume."""


class RunStopped(RuntimeError):
    """lmms-eval's evaluation raised (its scoring or aggregation, say): the answers given so far are kept,
    the run is incomplete, and a rerun re-uses them from the journal."""


def failing_task(err: BaseException) -> str | None:
    """The lmms-eval task being scored when ``err`` was raised, read off the frames it passed through
    (lmms-eval's evaluator holds it as ``task`` while scoring a sample and ``task_output`` while
    aggregating); the innermost one wins. None when no frame held one."""
    name = None
    tb = err.__traceback__
    while tb is not None:
        frame_locals = tb.tb_frame.f_locals
        for key in ("task", "task_output"):  # in one frame, task_output is the current one
            obj = frame_locals.get(key)
            candidate = getattr(obj, "task_name", None) or getattr(getattr(obj, "config", None), "task", None)
            if isinstance(candidate, str):
                name = candidate
        tb = tb.tb_next
    return name


def _stop_part_way(target: Path, lm: PrunedLlava, err: Exception) -> RunStopped:
    """Keep what a run whose evaluation raised got done: ``partial/samples.jsonl`` (answers, timings) and
    ``partial/failure.json`` (what failed, with the traceback) beside its journal; the error says what
    failed and how to resume."""
    partial = target / PARTIAL
    rows = [record.to_dict() for record in lm.records]
    task = failing_task(err)
    what = f"scoring task {task!r}" if task else "lmms-eval's evaluation"
    if lm.answered_all:
        when = f"after all {len(rows)} samples were answered"
    elif rows:
        when = f"after {len(rows)} of {lm.total} samples"
    else:
        when = "before any sample was answered"
    error = f"{type(err).__name__}: {str(err) or '(no message)'}"
    failure = {
        "failed": what,
        "when": when,
        "error": error,
        "samples_answered": len(rows),
        "traceback": traceback.format_exception(err),
    }
    write_json(partial / "failure.json", failure)
    message = f"{what} failed {when}: {error} (traceback in {partial / 'failure.json'})"
    if not rows:
        return RunStopped(message)
    write_jsonl(partial / "samples.jsonl", rows)
    return RunStopped(
        f"{message}; the run is incomplete: its {len(rows)} answers and timings are in {partial / 'samples.jsonl'} "
        "and its journal; rerunning the same command re-uses them (no answer is generated again)"
    )


def evaluate(cfg) -> int:
    """Run the composed config; return the process exit code (1 when any sample failed).

    Raises RunFolderBusy (another process writes the run folder), RunStopped (evaluation failed after
    samples were answered; they are kept) and RunInterrupted (Ctrl-C; the journal is kept).
    """
    check_config(cfg)
    target = run_dir(cfg)
    label = progress_label(target.name)
    if label:
        print(label, file=sys.stderr)
    check_not_held(target)
    plan = plan_run(cfg, target)  # read-only: a folder of another config is refused before any work
    if plan.complete is not None:
        return _skip(plan)
    pruner = build_pruner(cfg.pruner, cfg.budget)
    quiet_lmms_eval(cfg.log_level)
    locate_weights(cfg.model)
    locate_pruner_weights(cfg.pruner)
    judge_plan = plan_tasks(cfg.benchmark.tasks, JudgeConfig.resolve(cfg.judge))
    task_dict = load_tasks(cfg.benchmark, cfg.model, judge_plan)
    notes: list[str] = []
    with run_folder_lock(target, notes):
        plan = plan_run(cfg, target)  # again, now that no other process can change the folder
        for note in [*notes, *plan.notes]:
            print(note, file=sys.stderr)
        if plan.complete is not None:  # another run completed it while this one loaded its tasks
            return _skip(plan)
        return _run_locked(cfg, target, plan, pruner, task_dict, judge_plan, label)


def _run_locked(
    cfg, target: Path, plan: RunPlan, pruner: Pruner, task_dict: dict, judge_plan: JudgePlan, label: str | None
) -> int:
    loaded, device, dtype = load_pruned_model(cfg, pruner)
    journal = plan.journal
    for stale in ("samples.jsonl", "failure.json"):  # a failed attempt's; the journal holds its answers
        (target / PARTIAL / stale).unlink(missing_ok=True)
    journal.start()
    runtime = build_runtime(cfg.runtime, cfg.compile, pruner, device)
    desc = label.split(":")[0] if label else "samples"  # during a sweep: "run k/n"
    lm = PrunedLlava(
        loaded, pruner, warmup=cfg.warmup, progress=cfg.progress, journal=journal, runtime=runtime, desc=desc
    )
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.utils import get_datetime_str

    load_start = snapshot()
    try:
        results = simple_evaluate(
            model=lm,
            tasks=list(task_dict.values()),
            task_manager=benchmark_task_manager(cfg.benchmark, cfg.model),  # else it indexes every built-in task again
            limit=cfg.limit,
            log_samples=True,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
            verbosity=cfg.log_level,
            datetime_str=get_datetime_str(timezone="UTC"),  # the run's own timestamps are UTC (not its Singapore)
        )
        load = machine_load(load_start, snapshot())
        if results is None:
            raise RuntimeError("lmms-eval returned no results")
        rows, metrics, latency, summary = _score(cfg, lm, results, task_dict, judge_plan, device, dtype, load)
    except KeyboardInterrupt:
        journal.close()  # flushed, then counted: Ctrl-C may land between a journal line and lm.records
        raise RunInterrupted(
            f"interrupted after {journal.kept()} of {lm.total or '?'} samples of {target}; "
            "rerun the same command to resume (answered samples are kept in its journal)"
        ) from None
    except Exception as err:
        raise _stop_part_way(target, lm, err) from err
    finally:
        journal.close()
        pruner.detach(loaded.model)

    with staged_directory(target) as staging:
        write_text(staging / "config.yaml", OmegaConf.to_yaml(redacted_config(cfg)))
        write_jsonl(staging / "samples.jsonl", rows)
        write_json(staging / "metrics.json", metrics)
        write_json(staging / "latency.json", latency)
        write_text(staging / "summary.txt", summary + "\n")
        record = completion_record(plan.identity, len(rows), metrics["errors"], metrics["resumed_samples"])
        write_json(staging / RUN_RECORD, record)
    print(summary)
    print(f"\nresults: {target}")
    if metrics["errors"]:
        print(f"\n{metrics['errors']} of {metrics['samples']} samples failed; reasons in {target / 'samples.jsonl'}")
        return 1
    return 0


def _score(cfg, lm: PrunedLlava, results: dict, task_dict: dict, judge_plan: JudgePlan, device, dtype, load: dict):
    """The run's per-sample rows, metrics, latency (with the machine's load) and its summary text."""
    metric_names = {name: [m["metric"] for m in task.config.metric_list] for name, task in task_dict.items()}
    rows = join_records(lm.records, results["samples"], metric_names)
    metrics = task_metrics(results, rows, judge_plan)
    metrics["derived"] = derived_metrics(rows)
    resumed = sum(row["from_journal"] for row in rows)
    metrics["resumed_samples"] = resumed
    metrics["journal_lines_rejected"] = len(lm.journal.rejected)
    latency = latency_summary(rows)
    latency["meta"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "limit": cfg.limit,
        "model": cfg.model.name,
        "pruner": cfg.pruner.name,
        "budget": cfg.budget,
        "runtime": lm.runtime.name,
        "compile_backend": lm.runtime.backend,
        "warmup_seconds": lm.warmup_seconds,  # with runtime=compiled, compilation included
        "samples_timed_with_compilation": sum(row.get("graphs_compiled", 0) > 0 for row in rows),
        "machine_load": load,
    }
    native, why_not = _native_comparison(cfg, latency["meta"])
    latency["relative_to_native"] = relative_latency(latency, native) if native else None
    latency["relative_note"] = why_not
    budget = "all" if cfg.budget is None else cfg.budget
    title = " | ".join(
        [
            cfg.model.name,
            cfg.benchmark.name,
            f"pruner={cfg.pruner.name} budget={budget}",
            latency["meta"]["device"],
            _runtime_label(lm.runtime),
        ]
    )
    summary = render_summary(title, metrics, latency, latency["relative_to_native"], why_not)
    if resumed:
        summary += f"\n({resumed} of {len(rows)} samples re-used from the journal of an interrupted run)"
    warning = load_warning(load)
    if warning:
        summary += f"\n{warning}"
    compiled_in_samples = latency["meta"]["samples_timed_with_compilation"]
    if compiled_in_samples:
        summary += (
            f"\nwarning: {compiled_in_samples} sample(s) compiled a new graph while timed (a shape the warm-up did "
            "not see): their latency includes compilation"
        )
    return rows, metrics, latency, summary


def _runtime_label(runtime) -> str:
    return "eager" if runtime.backend is None else f"compiled ({runtime.backend})"
