"""data.root: the real lmms-eval tasks read a local copy laid out as `hf download --local-dir` leaves it
(tests/real_schema.py), their videos where lmms-eval's own code would find them, and whatever is missing
fails before any heavy work, naming the task, the repository, the path and the command that fetches it."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import compose_config, run_py
from real_schema import write_mme, write_root

from evoprune.harness.judge import JudgeConfig, plan_tasks
from evoprune.harness.real_data import DataUnavailableError, local_task_configs, unpack_archives
from evoprune.harness.resume import identity_config
from evoprune.harness.runner import load_tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import download_data  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_root(tmp_path_factory.mktemp("real_data"))


def _load(root: Path, benchmark: str, tasks: str, *overrides):
    model = "tiny_llava_video" if benchmark == "video" else "tiny_llava"
    cfg = compose_config(
        f"model={model}", f"benchmark={benchmark}", f"benchmark.tasks={tasks}", f"data.root={root}", *overrides
    )
    return load_tasks(cfg.benchmark, cfg.model, plan_tasks(cfg.benchmark.tasks, JudgeConfig.resolve(cfg.judge)))


def test_an_image_task_reads_the_local_copy(root):
    (task,) = _load(root, "image", "[mme]").values()
    docs = task.test_docs()
    assert [doc["answer"] for doc in docs] == ["Yes", "No"]
    assert task.config.dataset_path == str(root / "lmms-lab-encoder" / "MME")
    assert task.doc_to_visual(docs[0])[0].size == (48, 48)


def test_video_tasks_find_their_videos_in_the_unpacked_folders(root):
    tasks = _load(root, "video", "[videomme,longvideobench_val_v,mvbench]")
    assert len(tasks) == 22  # Video-MME, LongVideoBench and MVBench's 20 subtasks
    (videomme,) = tasks["videomme"].test_docs()
    assert tasks["videomme"].doc_to_visual(videomme) == [
        str(root / "lmms-eval/Video-MME/unpacked/data/fFjv93ACGo8.mp4")
    ]
    (lvb,) = tasks["longvideobench_val_v"].test_docs()
    assert tasks["longvideobench_val_v"].doc_to_visual(lvb) == [
        str(root / "longvideobench/LongVideoBench/unpacked/videos/86CxyhFV9MI.mp4")
    ]
    count = tasks["mvbench_action_count"]
    (doc,) = count.test_docs()
    assert count.doc_to_visual(doc) == [str(root / "OpenGVLab/MVBench/unpacked/perception/videos/action_count.mp4")]
    for name, task in tasks.items():
        for doc in task.test_docs():
            assert Path(task.doc_to_visual(doc)[0]).is_file(), name


def test_our_video_paths_are_lmms_evals_under_its_cache_folder(root, monkeypatch):
    """lmms-eval's own doc_to_visual, its cache folders pointed at the unpacked ones, finds the same files."""
    from lmms_eval.tasks.longvideobench import utils as lvb_utils
    from lmms_eval.tasks.mvbench import utils as mvbench_utils
    from lmms_eval.tasks.videomme import utils as videomme_utils

    tasks = _load(root, "video", "[videomme,longvideobench_val_v,mvbench]")
    monkeypatch.setattr(videomme_utils, "base_cache_dir", str(root / "lmms-eval/Video-MME"))
    monkeypatch.setattr(videomme_utils, "cache_name", "unpacked")
    (doc,) = tasks["videomme"].test_docs()
    assert videomme_utils.videomme_doc_to_visual(doc) == tasks["videomme"].doc_to_visual(doc)
    monkeypatch.setenv("HF_HOME", str(root / "longvideobench/LongVideoBench"))
    monkeypatch.setattr(
        lvb_utils, "_resolve_dataset_dir", lambda *a: (str(root / "longvideobench/LongVideoBench/unpacked/videos/"), {})
    )
    (doc,) = tasks["longvideobench_val_v"].test_docs()
    assert lvb_utils.longvideobench_doc_to_visual_v(doc) == tasks["longvideobench_val_v"].doc_to_visual(doc)
    monkeypatch.setattr(mvbench_utils, "base_cache_dir", str(root / "OpenGVLab/MVBench"))
    monkeypatch.setattr(mvbench_utils, "cache_name", "unpacked")
    for name in ("mvbench_action_count", "mvbench_moving_count", "mvbench_episodic_reasoning"):
        (doc,) = tasks[name].test_docs()
        ours = tasks[name].doc_to_visual(doc)
        assert mvbench_utils.mvbench_doc_to_visual(doc, {"sub_task": name.removeprefix("mvbench_")}) == ours


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "lmms-lab-encoder/MME").rename(root / "elsewhere"), "no folder"),
        (
            lambda root: (root / "lmms-lab-encoder/MME/data/test-00000-of-00001.parquet").rename(
                root / "lmms-lab-encoder/MME/data/train-00000-of-00001.parquet"
            ),
            "no files for split 'test'",
        ),
    ],
)
def test_a_missing_image_dataset_names_task_repository_path_and_command(tmp_path, damage, message):
    root = write_root(tmp_path)
    damage(root)
    with pytest.raises(DataUnavailableError) as error:
        _load(root, "image", "[mme]")
    text = str(error.value)
    assert text.startswith("task mme: its dataset lmms-lab-encoder/MME") and message in text
    assert f"hf download lmms-lab-encoder/MME --repo-type dataset --local-dir {root / 'lmms-lab-encoder/MME'}" in text


def test_missing_videos_are_named_with_the_unpack_command(tmp_path):
    root = write_root(tmp_path)
    (root / "OpenGVLab/MVBench/unpacked/perception/videos/action_count.mp4").unlink()
    named = r"task mvbench_action_count: its dataset OpenGVLab/MVBench \(revision video\).*action_count.mp4"
    with pytest.raises(DataUnavailableError, match=named + ".*--unpack"):
        _load(root, "video", "[mvbench]")
    (root / "lmms-eval/Video-MME/unpacked").rename(root / "lmms-eval/Video-MME/elsewhere")
    with pytest.raises(DataUnavailableError, match=r"task videomme: .*not unpacked: no folder .*Video-MME/unpacked"):
        _load(root, "video", "[videomme]")


def test_the_local_copy_is_not_part_of_a_runs_identity(root, tmp_path):
    here = compose_config("benchmark=image", f"data.root={root}")
    there = compose_config("benchmark=image", f"benchmark.data_root={tmp_path}")
    assert identity_config(here) == identity_config(there) == identity_config(compose_config("benchmark=image"))


def test_two_copies_with_other_contents_read_their_own(tmp_path):
    """The datasets library would read the second copy's tables from the first's cache (its key is the dataset
    card alone): each set of files gets a cache folder of its own."""
    first, second = write_root(tmp_path / "first"), write_root(tmp_path / "second")
    lvb = second / "longvideobench/LongVideoBench/lvb_val.json"
    lvb.write_text(lvb.read_text().replace("What moves first?", "What moves last?"))
    questions = [
        _load(root, "video", "[longvideobench_val_v]")["longvideobench_val_v"].test_docs()[0]["question"]
        for root in (first, second)
    ]
    assert questions == ["What moves first?", "What moves last?"]


def test_judge_dict_configs_keep_their_overrides_and_gain_the_local_files(root):
    from evoprune.harness.real_data import TaskData

    folder = root / "r/MMBench"
    found = [TaskData("mmbench_en_dev", "mmbench_en_dev", "r/MMBench", None, folder, "en", "dev", None, None)]
    judge_dict = {"task": "mmbench_en_dev", "process_results": print}
    (config,) = local_task_configs([judge_dict], found, root / "cache")
    cache = {"cache_dir": str(root / "cache")}
    assert config == judge_dict | {"dataset_path": str(folder), "dataset_kwargs": cache}


def test_unpack_extracts_zips_and_joined_tar_parts_once(tmp_path):
    folder, videos = tmp_path / "repo", tmp_path / "repo" / "unpacked"
    folder.mkdir()
    with zipfile.ZipFile(folder / "videos_chunked_01.zip", "w") as zipped:
        zipped.writestr("data/a.mp4", b"aaa")
        zipped.writestr("data/b.mp4", b"bbb")
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("videos/c.mp4")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ccc"))
    data = tar_bytes.getvalue()
    (folder / "videos.tar.part.aa").write_bytes(data[:700])
    (folder / "videos.tar.part.ab").write_bytes(data[700:])
    log = []
    unpack_archives(folder, videos, log=log.append)
    assert (videos / "data/a.mp4").read_bytes() == b"aaa" and (videos / "videos/c.mp4").read_bytes() == b"ccc"
    assert [p.name for p in videos.iterdir() if p.name.startswith(".")] == []  # no staging left
    (videos / "data/b.mp4").unlink()
    unpack_archives(folder, videos, log=log.append)  # again: only what is missing
    assert (videos / "data/b.mp4").read_bytes() == b"bbb"
    assert log[-2:] == [
        "videos_chunked_01.zip: 1 of 2 files to extract",
        f"videos: already extracted at {videos / 'videos'}",
    ]


def test_download_data_check_and_plan(root, tmp_path, capsys):
    assert download_data.main(["--benchmark", "all", "--root", str(root), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"ok: OpenGVLab/MVBench at {root / 'OpenGVLab/MVBench'}" in out and "mvbench (group)" in out
    assert "ok: lmms-lab-encoder/MMBench" in out and "mmbench_en_dev, mmbench_cn_dev" in out
    partial = tmp_path / "partial"
    write_mme(partial)
    assert download_data.main(["--benchmark", "image", "--root", str(partial), "--check"]) == 2
    assert (
        "error: task vqav2_val: its dataset lmms-lab-encoder/VQAv2 is not in the local copy" in capsys.readouterr().err
    )
    with redirect_stdout(io.StringIO()) as plan:
        download_data.main(["--benchmark", "video", "--root", str(root)])
    assert (
        f"hf download OpenGVLab/MVBench --repo-type dataset --revision video --local-dir {root / 'OpenGVLab/MVBench'}"
        in plan.getvalue()
    )


def test_run_py_runs_the_real_suites_offline_from_the_local_copy(root, tmp_path):
    """The image suite unpruned and the video suite pruned, through run.py with the trained tiny models: every
    real task answers every row; MVBench's derived score is the mean of lmms-eval's own 20 subtask scores."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    runs = tmp_path / "runs"
    image = run_py(
        "model=tiny_llava_trained", "benchmark=image", f"data.root={root}", f"output_dir={runs}", env=offline
    )
    assert image.returncode == 0, image.stderr[-3000:]
    metrics = json.loads((runs / "tiny_llava_trained/image/none-all/metrics.json").read_text())
    assert {name: task["samples"] for name, task in metrics["tasks"].items()} == {
        "vqav2_val": 2,
        "mme": 2,
        "mmbench_en_dev": 2,
        "mmbench_cn_dev": 2,
        "mmvet": 2,
    }
    assert metrics["errors"] == 0
    video = run_py(
        "model=tiny_llava_video_trained",
        "benchmark=video",
        "pruner=evoprune",
        "budget=16",
        f"data.root={root}",
        f"output_dir={runs}",
        env=offline,
    )
    assert video.returncode == 0, video.stderr[-3000:]
    metrics = json.loads((runs / "tiny_llava_video_trained/video/evoprune-16/metrics.json").read_text())
    assert metrics["samples"] == 22 and metrics["errors"] == 0
    subtasks = [
        task["metrics"]["mvbench_accuracy"] for name, task in metrics["tasks"].items() if name.startswith("mvbench_")
    ]
    assert len(subtasks) == 20
    derived = metrics["derived"]
    assert derived["mvbench_test"]["value"] == pytest.approx(sum(subtasks) / 20)
    assert [derived[name]["samples"] for name in ("longvideobench_val", "videomme_overall", "videomme_short")] == [
        1,
        1,
        1,
    ]
