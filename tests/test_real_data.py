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

from evoprune.harness.common.errors import DataUnavailableError
from evoprune.harness.data.real_data import local_task_configs, unpack_archives
from evoprune.harness.evaluation.runner import load_tasks
from evoprune.harness.results.judge import JudgeConfig, plan_tasks
from evoprune.harness.results.resume import identity_config

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
    assert [doc["answer"] for doc in docs] == ["Yes", "No"] * 4  # a pair per image
    assert task.config.dataset_path == str(root / "lmms-lab-encoder" / "MME")
    assert task.doc_to_visual(docs[0])[0].size == (336, 336)


def test_video_tasks_find_their_videos_in_the_unpacked_folders(root):
    tasks = _load(root, "video", "[videomme,longvideobench_val_v,mvbench]")
    assert len(tasks) == 22  # Video-MME, LongVideoBench and MVBench's 20 subtasks
    videomme = tasks["videomme"].test_docs()[0]
    assert tasks["videomme"].doc_to_visual(videomme) == [str(root / "lmms-eval/Video-MME/unpacked/data/clip_000.mp4")]
    lvb = tasks["longvideobench_val_v"].test_docs()[0]
    assert tasks["longvideobench_val_v"].doc_to_visual(lvb) == [
        str(root / "longvideobench/LongVideoBench/unpacked/videos/clip_000.mp4")
    ]
    count = tasks["mvbench_action_count"]
    assert count.doc_to_visual(count.test_docs()[0]) == [
        str(root / "OpenGVLab/MVBench/unpacked/perception/videos/clip_000.mp4")
    ]
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
    doc = tasks["videomme"].test_docs()[0]
    assert videomme_utils.videomme_doc_to_visual(doc) == tasks["videomme"].doc_to_visual(doc)
    monkeypatch.setenv("HF_HOME", str(root / "longvideobench/LongVideoBench"))
    monkeypatch.setattr(
        lvb_utils, "_resolve_dataset_dir", lambda *a: (str(root / "longvideobench/LongVideoBench/unpacked/videos/"), {})
    )
    doc = tasks["longvideobench_val_v"].test_docs()[0]
    assert lvb_utils.longvideobench_doc_to_visual_v(doc) == tasks["longvideobench_val_v"].doc_to_visual(doc)
    monkeypatch.setattr(mvbench_utils, "base_cache_dir", str(root / "OpenGVLab/MVBench"))
    monkeypatch.setattr(mvbench_utils, "cache_name", "unpacked")
    for name in ("mvbench_action_count", "mvbench_moving_count", "mvbench_episodic_reasoning"):
        doc = tasks[name].test_docs()[0]
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
    (root / "OpenGVLab/MVBench/unpacked/perception/videos/clip_000.mp4").unlink()  # action_count's and others'
    named = r"task mvbench_\w+: its dataset OpenGVLab/MVBench \(revision video\).*perception/videos/clip_000.mp4"
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
    rows = json.loads(lvb.read_text())
    lvb.write_text(json.dumps([rows[0] | {"question": "Changed?"}, *rows[1:]]))
    questions = [
        _load(root, "video", "[longvideobench_val_v]")["longvideobench_val_v"].test_docs()[0]["question"]
        for root in (first, second)
    ]
    assert questions == [rows[0]["question"], "Changed?"]


def test_judge_dict_configs_keep_their_overrides_and_gain_the_local_files(root):
    from evoprune.harness.data.real_data import TaskData

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


def _samples(run: Path) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        samples.setdefault(row["task"], []).append(row)
    return {task: sorted(rows, key=lambda row: row["doc_id"]) for task, rows in samples.items()}


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.drop_columns([name for name in ("image",) if name in table.column_names]).to_pylist()


NUMBER_WORDS = {word: str(n) for n, word in enumerate("zero one two three four five six seven eight nine ten".split())}


def _vqa_normal(text: str) -> str:
    """VQA's answer normalisation as far as these answers need it: case, articles, number words, full stop."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().strip().rstrip(".").split() if w not in ("a", "an", "the")]
    return " ".join(words)


def _vqa_accuracy(answer: str, humans: list[str]) -> float:
    """The VQA metric: min(1, matching humans / 3), averaged over the ten ways of leaving one human out."""
    ours = _vqa_normal(answer)
    matches = [_vqa_normal(h) == ours for h in humans]
    return sum(min(1.0, (sum(matches) - m) / 3) for m in matches) / len(humans)


def _letter(reply: str, letters: str = "ABCDE") -> str | None:
    """The option letter a reply is (an optional full stop after it), else None."""
    reply = reply.strip().rstrip(".")
    return reply if len(reply) == 1 and reply in letters else None


def _mme_by_hand(samples: list[dict], rows: list[dict]) -> float:
    """Sum over categories of the mean over images of acc + acc+ (percent), a reply right when its first word
    is the answer."""
    per_image: dict[tuple, list[bool]] = {}
    for sample, row in zip(samples, rows, strict=True):
        first = sample["answer"].strip().split()[0].strip(".,").lower() if sample["answer"].strip() else ""
        per_image.setdefault((row["category"], row["question_id"]), []).append(first == row["answer"].lower())
    by_category: dict[str, list[float]] = {}
    for (category, _), hits in per_image.items():
        by_category.setdefault(category, []).append(100 * sum(hits) / 2 + 100 * all(hits))
    return sum(sum(scores) / len(scores) for scores in by_category.values())


def _mmbench_read(reply: str, row: dict) -> str | None:
    """MMBench's reading of a reply: an option letter alone, else the one option whose text it contains."""
    options = {letter: row[letter] for letter in "ABCD" if row[letter] is not None}
    named = [letter for letter, text in options.items() if text.lower() in reply.lower()]
    return _letter(reply, "".join(options)) or (named[0] if len(named) == 1 else None)


def _mmbench_by_hand(samples: list[dict], rows: list[dict]) -> tuple[float, int]:
    """(percent of questions whose copies were all answered right, replies read as no option)."""
    letters = [_mmbench_read(s["answer"], row) for s, row in zip(samples, rows, strict=True)]
    copies: dict[int, list[bool]] = {}
    for letter, row in zip(letters, rows, strict=True):
        copies.setdefault(row["index"] % 1_000_000, []).append(letter == row["answer"])
    return 100 * sum(all(hits) for hits in copies.values()) / len(copies), letters.count(None)


def _offline_run(root: Path, tmp_path: Path, model: str, benchmark: str, pruner: str, budget: int):
    """run.py on the local copy with the Hub switched off: the run's metrics.json and samples by task."""
    overrides = [f"model={model}", f"benchmark={benchmark}", f"pruner={pruner}", f"budget={budget}"]
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = run_py(*overrides, f"data.root={root}", f"output_dir={tmp_path / 'runs'}", env=offline)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / model / benchmark / f"{pruner}-{budget}"
    return json.loads((run / "metrics.json").read_text()), _samples(run)


def test_run_py_runs_the_real_suites_offline_from_the_local_copy(root, tmp_path):
    """The image suite with FasterVLM and the video suite with EvoPrune, through run.py with the trained tiny
    models: every real task answers every row, and the metrics, Table 1's and Table 2's, equal their values
    worked out by hand from the replies (MME's pairs, MMBench's circular copies and unreadable replies, VQAv2's
    ten answers, Video-MME by duration, LongVideoBench's perception / relation split, MVBench over its 20
    subtasks)."""
    metrics, samples = _offline_run(root, tmp_path, "tiny_llava_trained", "image", "fastervlm", 64)
    counts = {"vqav2_val": 4, "mme": 8, "mmbench_en_dev": 8, "mmbench_cn_dev": 8, "mmvet": 2}
    assert {name: task["samples"] for name, task in metrics["tasks"].items()} == counts
    assert metrics["errors"] == 0
    scores = {name: task["metrics"] for name, task in metrics["tasks"].items()}
    mme_rows = _parquet_rows(root / "lmms-lab-encoder/MME/data/test-00000-of-00001.parquet")
    assert scores["mme"]["mme_perception_score"] == pytest.approx(_mme_by_hand(samples["mme"], mme_rows))
    for subset in ("en", "cn"):
        rows = _parquet_rows(root / f"lmms-lab-encoder/MMBench/{subset}/dev-00000-of-00001.parquet")
        accuracy, unreadable = _mmbench_by_hand(samples[f"mmbench_{subset}_dev"], rows)
        assert (scores[f"mmbench_{subset}_dev"]["accuracy"], scores[f"mmbench_{subset}_dev"]["needs_judge"]) == (
            pytest.approx(accuracy),
            unreadable,
        )
    vqa_rows = _parquet_rows(root / "lmms-lab-encoder/VQAv2/data/validation-00000-of-00001.parquet")
    vqa = [
        _vqa_accuracy(s["answer"], [a["answer"] for a in row["answers"]])
        for s, row in zip(samples["vqav2_val"], vqa_rows, strict=True)
    ]
    assert scores["vqav2_val"]["exact_match"] == pytest.approx(sum(vqa) / len(vqa))
    assert scores["mmvet"]["status"] == "not scored (no judge)"

    metrics, samples = _offline_run(root, tmp_path, "tiny_llava_video_trained", "video", "evoprune", 16)
    assert metrics["samples"] == 3 + 4 + 3 * 3 + 17 and metrics["errors"] == 0
    derived = {name: (entry["value"], entry["samples"]) for name, entry in metrics["derived"].items()}

    def percent(hits: list[bool]):
        return (pytest.approx(100 * sum(hits) / len(hits)) if hits else None, len(hits))

    videomme_rows = _parquet_rows(root / "lmms-eval/Video-MME/videomme/test-00000-of-00001.parquet")
    hits = [
        (_letter(s["answer"], "ABCD") == row["answer"], row["duration"])
        for s, row in zip(samples["videomme"], videomme_rows, strict=True)
    ]
    assert derived["videomme_overall"] == percent([hit for hit, _ in hits])
    for duration in ("short", "medium", "long"):
        assert derived[f"videomme_{duration}"] == percent([hit for hit, d in hits if d == duration])
    lvb_rows = json.loads((root / "longvideobench/LongVideoBench/lvb_val.json").read_text())
    hits = [
        (_letter(s["answer"]) == "ABCDE"[row["correct_choice"]], row["question_category"])
        for s, row in zip(samples["longvideobench_val_v"], lvb_rows, strict=True)
    ]
    assert derived["longvideobench_val"] == percent([hit for hit, _ in hits])
    # the LongVideoBench paper's level-1 (perception) and level-2 (relation) question categories
    assert derived["longvideobench_perception"] == percent([hit for hit, c in hits if c in ("S2A", "S2E")])
    assert derived["longvideobench_relation"] == percent([hit for hit, c in hits if c in ("O3O", "E3E")])
    mvbench = []
    for task, task_samples in samples.items():
        if task.startswith("mvbench_"):
            rows = json.loads((root / f"OpenGVLab/MVBench/json/{task.removeprefix('mvbench_')}.json").read_text())
            for s, row in zip(task_samples, rows, strict=True):
                letter = _letter(s["answer"], "ABCD"[: len(row["candidates"])])
                mvbench.append(letter is not None and row["candidates"]["ABCD".index(letter)] == row["answer"])
    assert derived["mvbench_test"] == percent(mvbench)


def test_the_sweep_preflight_checks_the_local_copy_quietly(tmp_path):
    """The multirun preflight names a missing dataset (exit 2 before any run) without lmms-eval's DEBUG lines."""
    root = tmp_path / "partial"
    write_mme(root)
    result = run_py("-m", "benchmark=image", f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "limit=2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: task vqav2_val: its dataset lmms-lab-encoder/VQAv2 is not in the local copy" in result.stderr
    assert "DEBUG" not in result.stderr
    assert not (tmp_path / "runs").exists()
