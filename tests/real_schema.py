"""Tiny local copies of the real benchmarks, laid out as `hf download --local-dir` leaves them (generated
per test session, never shipped): each dataset's files under ``<root>/<repo>``, named subsets declared in
the README's ``configs`` as on the Hub, the columns each lmms-eval task's code reads, and the videos where
`scripts/download_data.py --unpack` puts them: the eight tasks of Tables 1-3 (MVBench's 20 subtasks)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from evoprune.harness.smoke_video import write_mp4


def _video(path: Path, seed: int) -> None:
    frames = np.random.default_rng(seed).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames, fps=4)


def _readme(folder: Path, configs: list[tuple[str, str, str]]) -> None:
    """A dataset card declaring (config name, split, file pattern) triples, as the Hub repositories do."""
    lines = ["---", "configs:"]
    names = dict.fromkeys(name for name, _, _ in configs)
    for name in names:
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {pattern}" for n, split, pattern in configs if n == name]
    (folder / "README.md").write_text("\n".join([*lines, "---", ""]))


def write_mme(root: Path) -> Path:
    folder = root / "lmms-lab-encoder" / "MME"
    (folder / "data").mkdir(parents=True)
    features = datasets.Features(
        {name: datasets.Value("string") for name in ("question_id", "question", "answer", "category")}
        | {"image": datasets.Image()}
    )
    rows = {
        "question_id": ["code_reasoning/0020.png"] * 2,
        "question": ["Is the square red? Please answer yes or no.", "Is the square blue? Please answer yes or no."],
        "answer": ["Yes", "No"],
        "category": ["color", "color"],
        "image": [Image.new("RGB", (48, 48), (200, 20, 20))] * 2,
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def _parquet(folder: Path, split: str, rows: dict, features: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict(rows, features=None if features is None else datasets.Features(features))
    table.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def _images(count: int) -> list[Image.Image]:
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200), (200, 200, 20)]
    return [Image.new("RGB", (48, 48), colours[i % len(colours)]) for i in range(count)]


def write_vqav2(root: Path) -> Path:
    """VQAv2 val: ten human answers per question (lmms-eval's exact match counts how many agree)."""
    folder = root / "lmms-lab-encoder" / "VQAv2"
    answers = [
        [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
            for i, a in enumerate(["red"] * 8 + ["pink"] * 2)
        ],
        [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(["2"] * 3 + ["two"] * 7)],
    ]
    rows = {
        "question_type": ["what color is the", "how many"],
        "multiple_choice_answer": ["red", "two"],
        "answers": answers,
        "image_id": [1, 2],
        "answer_type": ["other", "number"],
        "question_id": [10, 20],
        "question": ["What color is the square?", "How many squares are there?"],
        "image": _images(2),
    }
    answer = {
        "answer": datasets.Value("string"),
        "answer_confidence": datasets.Value("string"),
        "answer_id": datasets.Value("int64"),
    }
    features = {
        name: datasets.Value("string")
        for name in ("question_type", "multiple_choice_answer", "answer_type", "question")
    }
    features |= {"answers": [answer], "image_id": datasets.Value("int64"), "question_id": datasets.Value("int64")}
    _parquet(folder / "data", "validation", rows, features | {"image": datasets.Image()})
    return folder


def write_mmbench(root: Path) -> Path:
    """MMBench dev, English and Chinese subsets: a question and its circular copy (index + 1e6, options
    rotated), which must both be right to count."""
    folder = root / "lmms-lab-encoder" / "MMBench"
    options = ["red", "green", "blue", "yellow"]
    rotated = options[1:] + options[:1]
    for subset in ("en", "cn"):
        rows = {
            "index": [0, 1_000_000],
            "question": ["What colour is the square?"] * 2,
            "hint": ["nan"] * 2,
            "answer": ["A", "D"],
            "A": [options[0], rotated[0]],
            "B": [options[1], rotated[1]],
            "C": [options[2], rotated[2]],
            "D": [options[3], rotated[3]],
            "category": ["attribute_recognition"] * 2,
            "image": _images(1) * 2,
            "source": ["MMBench"] * 2,
            "L2-category": ["finegrained_perception (instance-level)"] * 2,
            "comment": ["nan"] * 2,
            "split": ["dev"] * 2,
        }
        features = {name: datasets.Value("string") for name in rows if name not in ("index", "image")}
        _parquet(folder / subset, "dev", rows, features | {"index": datasets.Value("int64"), "image": datasets.Image()})
    _readme(folder, [(subset, "dev", f"{subset}/dev-*.parquet") for subset in ("en", "cn")])
    return folder


def write_mmvet(root: Path) -> Path:
    folder = root / "lmms-lab-encoder" / "MMVet"
    rows = {
        "question_id": ["v1_0", "v1_1"],
        "image": _images(2),
        "question": ["What colour is the square?", "Is the square green?"],
        "answer": ["red", "yes"],
        "image_source": ["generated", "generated"],
        "capability": [["rec"], ["rec"]],
    }
    features = {name: datasets.Value("string") for name in ("question_id", "question", "answer", "image_source")}
    features |= {"capability": [datasets.Value("string")], "image": datasets.Image()}
    _parquet(folder / "data", "test", rows, features)
    return folder


def write_videomme(root: Path) -> Path:
    folder = root / "lmms-eval" / "Video-MME"
    (folder / "videomme").mkdir(parents=True)
    rows = {
        "video_id": ["001"],
        "duration": ["short"],
        "domain": ["Knowledge"],
        "sub_category": ["Humanity & History"],
        "url": ["https://www.youtube.com/watch?v=fFjv93ACGo8"],
        "videoID": ["fFjv93ACGo8"],
        "question_id": ["001-1"],
        "task_type": ["Counting Problem"],
        "question": ["How many squares appear?"],
        "options": [["A. 1.", "B. 2.", "C. 3.", "D. 4."]],
        "answer": ["B"],
    }
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / "videomme" / "test-00000-of-00001.parquet"))
    _video(folder / "unpacked" / "data" / "fFjv93ACGo8.mp4", 0)
    return folder


def write_longvideobench(root: Path) -> Path:
    folder = root / "longvideobench" / "LongVideoBench"
    folder.mkdir(parents=True)
    row = {
        "video_id": "86CxyhFV9MI",
        "question": "What moves first?",
        "question_wo_referring_query": "What moves first?",
        "candidates": ["the square", "the circle", "the triangle", "nothing"],
        **{
            f"option{k}": option
            for k, option in enumerate(["the square", "the circle", "the triangle", "nothing", "N/A"])
        },
        "correct_choice": 0,
        "position": [0, 0],
        "topic_category": "NP-News-Programs",
        "question_category": "S2E",
        "level": "L1-Perception",
        "id": "86CxyhFV9MI_0",
        "video_path": "86CxyhFV9MI.mp4",
        "subtitle_path": "86CxyhFV9MI_en.json",
        "duration_group": 15,
        "starting_timestamp_for_subtitles": 0,
        "duration": 2.0,
        "view_count": 1,
    }
    (folder / "lvb_val.json").write_text(json.dumps([row]))
    _readme(folder, [("default", "validation", "lvb_val.json")])
    _video(folder / "unpacked" / "videos" / "86CxyhFV9MI.mp4", 1)
    return folder


def write_mvbench(root: Path) -> Path:
    """One row per subtask, its video in lmms-eval's folder for that subtask (`DATA_LIST`)."""
    from lmms_eval.tasks.mvbench.utils import DATA_LIST

    folder = root / "OpenGVLab" / "MVBench"
    (folder / "json").mkdir(parents=True)
    for index, subtask in enumerate(sorted(DATA_LIST)):
        row = {"video": f"{subtask}.mp4", "question": "What happens?", "candidates": ["a", "b"], "answer": "a"}
        (folder / "json" / f"{subtask}.json").write_text(json.dumps([row]))
        _video(folder / "unpacked" / DATA_LIST[subtask] / f"{subtask}.mp4", 10 + index)
    _readme(folder, [(subtask, "train", f"json/{subtask}.json") for subtask in sorted(DATA_LIST)])
    return folder


def write_root(root: Path) -> Path:
    for write in (
        write_vqav2,
        write_mme,
        write_mmbench,
        write_mmvet,
        write_videomme,
        write_longvideobench,
        write_mvbench,
    ):
        write(root)
    return root
