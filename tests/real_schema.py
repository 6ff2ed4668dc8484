"""Tiny local copies of the real benchmarks, laid out as `hf download --local-dir` leaves them (generated
per test session, never shipped): each dataset's files under ``<root>/<repo>``, named subsets declared in
the README's ``configs`` as on the Hub, the columns each lmms-eval task's code reads, and the videos where
`scripts/download_data.py --unpack` puts them. So far MME, Video-MME, LongVideoBench and MVBench."""

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
    for write in (write_mme, write_videomme, write_longvideobench, write_mvbench):
        write(root)
    return root
