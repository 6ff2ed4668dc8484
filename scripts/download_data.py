"""The real benchmarks' files for Tables 1-3: what to download, unpacking the videos, checking a local copy.

    python scripts/download_data.py --benchmark image|video|all [--root DIR]            # the commands
    python scripts/download_data.py --benchmark video --root DIR --unpack               # after the downloads
    python scripts/download_data.py --benchmark all --root DIR --check                  # before a sweep
    python scripts/download_data.py --benchmark all --sizes                             # needs Hub access

The repositories are the ones the installed lmms-eval's task YAMLs name (``dataset_path``, and MVBench's
``revision``), so the copy matches what lmms-eval evaluates. ``--root`` defaults to config.yaml's
``data.root``; run the harness with ``data.root=DIR`` (evoprune/harness/data/real_data.py says how each task
reads it). ``--check`` loads nothing heavy: each task's split files, its unpacked videos and the first rows'
videos; exit 2 names the first thing missing. ``--sizes`` asks the Hub for each repository's file sizes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.common.errors import DataUnavailableError  # noqa: E402
from evoprune.harness.common.paths import CONFIG_DIR  # noqa: E402
from evoprune.harness.data.real_data import TaskData, check_local_data, task_data, unpack_archives  # noqa: E402

BENCHMARKS = {"image": ["image"], "video": ["video"], "all": ["image", "video"]}


def found_tasks(benchmark: str, root: str | None) -> tuple[Path, list[TaskData]]:
    """The local copy's root and every leaf task of the benchmark suites with its files there."""
    from hydra import compose, initialize_config_dir

    from evoprune.harness.evaluation.runner import benchmark_task_manager, data_root, quiet_lmms_eval
    from evoprune.harness.results.judge import JudgeConfig, plan_tasks

    overrides = [] if root is None else [f"data.root={Path(root).resolve()}"]
    found, where = [], None
    for suite in BENCHMARKS[benchmark]:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"benchmark={suite}", *overrides])
        quiet_lmms_eval(cfg.log_level)
        where = data_root(cfg.benchmark)
        if where is None:
            raise SystemExit("error: no root: pass --root DIR or set data.root in configs/config.yaml")
        # reading a task's YAML imports its code, which reads the judge's variables (MM-Vet's): set as a run would
        with plan_tasks(cfg.benchmark.tasks, JudgeConfig.resolve(cfg.judge)).environment():
            found += task_data(cfg.benchmark, benchmark_task_manager(cfg.benchmark, cfg.model), where)
    return where, found


def repositories(found: list[TaskData]) -> dict[tuple, list[TaskData]]:
    """(repo, revision, folder) → the tasks reading it, in first-seen order."""
    by_repo: dict[tuple, list[TaskData]] = {}
    for data in found:
        by_repo.setdefault((data.repo, data.revision, data.folder), []).append(data)
    return by_repo


def task_names(tasks: list[TaskData]) -> str:
    entries = list(dict.fromkeys(data.entry for data in tasks))
    return ", ".join(e if all(d.task == e for d in tasks if d.entry == e) else f"{e} (group)" for e in entries)


def print_plan(root: Path, found: list[TaskData]) -> None:
    print(f"# the local copy at {root} (data.root); longvideobench/LongVideoBench is gated: accept its terms")
    for (repo, revision, _), tasks in repositories(found).items():
        print(f"\n# {repo}{f' @ {revision}' if revision else ''}: {task_names(tasks)}")
        print(tasks[0].fetch_command())
        videos = {data.videos for data in tasks if data.videos is not None}
        for target in sorted(videos):
            print(f"#   then its videos are unpacked into {target} (--unpack)")
    if any(data.videos is not None for data in found):
        print(f"\npython scripts/download_data.py --benchmark video --root {root} --unpack")
    print(f"python scripts/download_data.py --benchmark all --root {root} --check")


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def print_sizes(found: list[TaskData]) -> None:
    from huggingface_hub import HfApi

    api, total = HfApi(), 0
    for repo, revision, _ in repositories(found):
        try:
            info = api.dataset_info(repo, revision=revision, files_metadata=True)
        except Exception as err:
            message = f"error: {repo}: the Hub did not answer ({type(err).__name__}: {err}); --sizes needs it"
            raise SystemExit(message) from err
        size = sum(sibling.size or 0 for sibling in info.siblings or [])
        total += size
        files = len(info.siblings or [])
        print(f"{repo}{f' @ {revision}' if revision else ''}: {size / 2**30:.1f} GiB in {files} files")
    print(f"total: {total / 2**30:.1f} GiB (before unpacking the videos, which about doubles a video dataset)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="all")
    parser.add_argument("--root", help="the local copy (default: data.root in configs/config.yaml)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="verify the local copy, downloading nothing")
    action.add_argument("--unpack", action="store_true", help="unpack the video datasets' archives")
    action.add_argument("--sizes", action="store_true", help="each repository's size, from the Hub")
    args = parser.parse_args(argv)
    root, found = found_tasks(args.benchmark, args.root)
    if args.sizes:
        print_sizes(found)
    elif args.unpack:
        for (repo, _, folder), tasks in repositories(found).items():
            for videos in sorted({data.videos for data in tasks if data.videos is not None}):
                if not folder.is_dir():
                    print(f"error: {repo} is not at {folder}: `{tasks[0].fetch_command()}` first", file=sys.stderr)
                    return 2
                unpack_archives(folder, videos)
    elif args.check:
        try:
            check_local_data(found, root)
        except DataUnavailableError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for (repo, _, folder), tasks in repositories(found).items():
            print(f"ok: {repo} at {folder} ({folder_size(folder) / 2**30:.2f} GiB): {task_names(tasks)}")
    else:
        print_plan(root, found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
