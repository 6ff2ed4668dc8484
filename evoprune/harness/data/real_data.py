"""The real benchmarks from a local copy (``data.root``): where each task's files are, the task
configs that point lmms-eval at them, and a check that names what is missing before any heavy work.

Layout: ``<root>/<repo>`` as ``hf download <repo> --repo-type dataset --local-dir <root>/<repo>`` leaves
it, ``<repo>`` being the task's own ``dataset_path`` in lmms-eval's task YAML (e.g.
``lmms-lab-encoder/MME``; MVBench at its ``revision``); a video task's archives unpacked into
``<root>/<repo>/<videos>`` (``benchmark.local_data.<task>.videos``) as lmms-eval unpacks them into its
cache folder (``scripts/download_data.py --unpack``). With a root, each task's config gets the local
folder as ``dataset_path`` and, of its ``dataset_kwargs``, only a datasets cache folder of these files'
own (`cache_folder`; no Hub options, no video download: lmms-eval then neither downloads nor unpacks
anything), and a video task's ``doc_to_visual`` becomes one that looks in the unpacked folder: lmms-eval's
own read it from ``$HF_HOME`` at import. Their relative paths are
lmms-eval's (Video-MME ``data/<videoID>.mp4``, else ``.MP4`` or ``.mkv``; LongVideoBench
``videos/<video_path>``; MVBench ``<its folder per subtask>/<video>``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evoprune.harness.common.errors import DataUnavailableError

SAMPLED_VIDEOS = 5  # videos a check looks for per task (the first rows')


@dataclass(frozen=True)
class TaskData:
    """One lmms-eval leaf task's files in the local copy."""

    task: str
    entry: str  # the benchmark's task it belongs to: itself, or its group
    repo: str  # the task YAML's dataset_path: the Hub repository
    revision: str | None
    folder: Path  # <root>/<repo>
    subset: str | None  # dataset_name
    split: str  # test_split
    videos: Path | None  # the unpacked videos (video tasks)
    doc_to_visual: Callable | None  # a row → [its video's path], in ``videos``

    def described(self) -> str:
        return f"task {self.task}: its dataset {self.repo}{f' (revision {self.revision})' if self.revision else ''}"

    def fetch_command(self) -> str:
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo} --repo-type dataset{revision} --local-dir {self.folder}"


def videomme_visual(videos: Path, doc: dict) -> list[str]:
    path = videos / "data" / f"{doc['videoID']}.mp4"
    for candidate in (path, path.with_suffix(".MP4"), path.with_suffix(".mkv")):
        if candidate.exists():
            return [str(candidate)]
    return [str(path)]  # the reader names it when it is missing


def longvideobench_visual(videos: Path, doc: dict) -> list[str]:
    return [str(videos / "videos" / doc["video_path"])]


def mvbench_visual(videos: Path, folder: str, doc: dict) -> list[str]:
    """``folder``: the subtask's (`_visual_for`). lmms-eval's fallback to ``data0613/<folder>`` applies to
    folders whose last part is ``clevrer`` or ``star``, which no subtask's is: left out."""
    return [str(videos / folder / doc["video"])]


# lmms-eval's video tasks by the family their leaf names start with: where a row's video is
VISUALS = {"videomme": videomme_visual, "longvideobench": longvideobench_visual, "mvbench": mvbench_visual}


def _visual_for(task: str, config: dict, videos: Path) -> Callable:
    """``task``'s doc → [video path] in ``videos``; MVBench's subtask folder from lmms-eval's own table."""
    family = next((name for name in VISUALS if task.startswith(name)), None)
    if family is None:
        raise DataUnavailableError(
            f"task {task}: benchmark.local_data gives it a videos folder, but this harness knows where the videos "
            f"of {sorted(VISUALS)} are only"
        )
    if family == "mvbench":
        from lmms_eval.tasks.mvbench.utils import DATA_LIST  # each subtask's folder

        sub_task = config["lmms_eval_specific_kwargs"]["default"]["sub_task"]
        return functools.partial(mvbench_visual, videos, DATA_LIST[sub_task])
    return functools.partial(VISUALS[family], videos)


def task_data(benchmark_cfg, manager, root: Path) -> list[TaskData]:
    """Every leaf task of ``benchmark_cfg.tasks`` (groups expanded) with its files under ``root``."""
    local = benchmark_cfg.get("local_data") or {}
    found = []
    for name in benchmark_cfg.tasks:
        leaves = _leaf_names(manager, name)
        spec = local.get(name) or {}
        for leaf in leaves:
            config = manager._get_config(leaf)  # lmms-eval's task YAML, includes resolved
            repo = config["dataset_path"]
            folder = root / repo
            videos = folder / spec["videos"] if spec.get("videos") else None
            found.append(
                TaskData(
                    task=leaf,
                    entry=name,
                    repo=repo,
                    revision=(config.get("dataset_kwargs") or {}).get("revision"),
                    folder=folder,
                    subset=config.get("dataset_name"),
                    split=config["test_split"],
                    videos=videos,
                    doc_to_visual=None if videos is None else _visual_for(leaf, config, videos),
                )
            )
    return found


def _leaf_names(manager, name: str) -> list[str]:
    if manager.task_index[name]["type"] != "group":
        return [name]
    return [leaf for task in manager._get_config(name)["task"] for leaf in _leaf_names(manager, task)]


def local_task_configs(tasks: list, found: list[TaskData], cache: Path) -> list:
    """``tasks`` (lmms-eval names or dict configs, as `JudgePlan.tasks` gives them) with every leaf task
    pointed at its local files and the datasets ``cache`` folder (`check_local_data`'s): groups become
    their leaves' dict configs."""
    configs = []
    for entry in tasks:
        entry = {"task": entry} if isinstance(entry, str) else entry
        base = {key: value for key, value in entry.items() if key != "task"}
        for data in (data for data in found if data.entry == entry["task"]):
            override = {"dataset_path": str(data.folder), "dataset_kwargs": {"cache_dir": str(cache)}}
            if data.doc_to_visual is not None:
                override["doc_to_visual"] = data.doc_to_visual
            configs.append({"task": data.task, **base, **override})
    return configs


def check_local_data(found: list[TaskData], root: Path) -> Path:
    """Each task's split files and, for a video task, its unpacked folder and the first rows' videos: the
    first thing missing raises `DataUnavailableError` naming the task, the repository, the path and the
    command that fetches it. Returns the datasets cache folder for exactly these files (`cache_folder`)."""
    import datasets

    split_files = []
    for data in found:
        where = data.described()
        fetch = f"fetch it with `{data.fetch_command()}`"
        if not data.folder.is_dir():
            raise DataUnavailableError(f"{where} is not in the local copy: no folder {data.folder}; {fetch}")
        try:
            builder = datasets.load_dataset_builder(str(data.folder), data.subset)
        except Exception as err:
            raise DataUnavailableError(
                f"{where} at {data.folder} does not load as a dataset"
                f"{f' (subset {data.subset})' if data.subset else ''} ({type(err).__name__}: {err}); {fetch}"
            ) from err
        files = (builder.config.data_files or {}).get(data.split)
        if not files:
            raise DataUnavailableError(
                f"{where} at {data.folder} has no files for split {data.split!r}"
                f"{f' of subset {data.subset}' if data.subset else ''}; {fetch}"
            )
        split_files += files
    cache = cache_folder(split_files)
    unpack = f"python scripts/download_data.py --root {root} --unpack"
    for data in found:
        if data.videos is None:
            continue
        where = data.described()
        if not data.videos.is_dir():
            raise DataUnavailableError(
                f"{where}: its videos are not unpacked: no folder {data.videos}; after the download, run `{unpack}`"
            )
        _check_sampled_videos(data, where, unpack, cache)
    return cache


def cache_folder(files: list[str]) -> Path:
    """lmms-eval's datasets cache + ``evoprune_local/<digest of the files' paths, sizes and times>``: the
    datasets library keys the cache of a folder whose dataset card lists its files by the card alone (two
    copies with different contents, or one updated in place, would read back the first one's tables)."""
    import hashlib

    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir  # the cache its own loads use

    digest = hashlib.sha256()
    for file in sorted(map(str, files)):
        stat = os.stat(file)
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return Path(_resolve_hf_datasets_cache_dir()) / "evoprune_local" / digest.hexdigest()[:16]


def _check_sampled_videos(data: TaskData, where: str, unpack: str, cache: Path) -> None:
    import datasets

    split = f"{data.split}[:{SAMPLED_VIDEOS}]"
    rows = datasets.load_dataset(str(data.folder), data.subset, split=split, cache_dir=str(cache))
    for doc in rows:
        (path,) = data.doc_to_visual(doc)
        if not os.path.exists(path):
            raise DataUnavailableError(
                f"{where}: row {doc.get('videoID') or doc.get('video_path') or doc.get('video')!r} names the video "
                f"{path}, which is not there; unpack the videos with `{unpack}`"
            )


def unpack_archives(folder: Path, videos: Path, log=print) -> None:
    """What lmms-eval does to a video dataset's download, into ``videos``: every zip under ``folder`` (not
    under ``videos``) extracted, files already there skipped; every tar's parts (``<name>.tar.*``,
    ``<name>_<n>.tar``) joined in name order and extracted, unless ``videos/<name>`` exists. Each file
    (zip) or each tar's top-level entries appear by a rename once whole: a killed run leaves no half file."""
    import re
    import shutil
    import tarfile
    import tempfile
    import zipfile

    def outside(path: Path) -> bool:
        return not path.is_relative_to(videos)

    videos.mkdir(parents=True, exist_ok=True)
    for archive in sorted(p for p in folder.rglob("*.zip") if outside(p)):
        with zipfile.ZipFile(archive) as zipped:
            members = [info for info in zipped.infolist() if not info.is_dir()]
            missing = [info for info in members if not (videos / info.filename).exists()]
            log(f"{archive.relative_to(folder)}: {len(missing)} of {len(members)} files to extract")
            for info in missing:
                target = videos / info.filename
                if not target.resolve().is_relative_to(videos.resolve()):
                    raise DataUnavailableError(f"{archive}: entry {info.filename!r} points outside {videos}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                    shutil.copyfileobj(source, tmp)
                os.replace(tmp.name, target)
    parts: dict[str, list[Path]] = {}
    for part in sorted(p for p in folder.rglob("*.tar*") if outside(p) and p.is_file()):
        base = re.sub(r"_\d+$", "", part.name.split(".tar")[0])
        parts.setdefault(base, []).append(part)
    for base, files in parts.items():
        if (videos / base).exists():
            log(f"{base}: already extracted at {videos / base}")
            continue
        log(f"{base}: joining {len(files)} part(s) and extracting into {videos}")
        with tempfile.TemporaryDirectory(dir=videos, prefix=".unpacking-") as staging:
            with tempfile.TemporaryFile(dir=staging) as joined:
                for file in files:
                    with open(file, "rb") as handle:
                        shutil.copyfileobj(handle, joined)
                joined.seek(0)
                with tarfile.open(fileobj=joined) as tar:
                    tar.extractall(Path(staging) / "out", filter="data")
            for entry in (Path(staging) / "out").iterdir():
                os.replace(entry, videos / entry.name)
