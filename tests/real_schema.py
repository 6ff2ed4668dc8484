"""Tiny local copies of the eight real benchmarks of Tables 1-3, laid out as `hf download --local-dir`
leaves them (generated per test session, never shipped): each dataset's files under ``<root>/<repo>``,
named subsets declared in the README's ``configs`` as on the Hub, the columns each lmms-eval task's code
reads, and the videos where `scripts/download_data.py --unpack` puts them.

The questions are the held-out ones the trained tiny models answer (the shapes scenes, the smoke video
clips), rewritten into each real schema, so a run gets some right and some wrong: MME's yes/no pairs
(one image, two questions), VQAv2's ten human answers, MMBench's circular copies (index + 1e6, options
rotated), Video-MME's three durations, LongVideoBench's perception and relation categories (two rows each), MVBench's
20 subtasks (the three the smoke clips stand in for with several rows, the rest one row each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets

from evoprune.harness.data.shapes_data import eval_scenes
from evoprune.harness.data.smoke_data import draw_scene
from evoprune.harness.data.smoke_video import MVBENCH_SUBTASKS, ensure_smoke_video_data

SCENES = 4  # image rows: MME 2 per scene, VQAv2 1, MMBench 1 + its circular copy, MM-Vet 1 per 2 scenes
VIDEO_ROWS = 3  # Video-MME rows (short, medium, long) and MVBench's per stood-in subtask
MME_CATEGORIES = {"existence": "existence", "color_at": "color", "left_of": "position", "above": "position"}
CIRCULAR_OFFSET = 1_000_000
LVB_ROWS = (0, 3, 6, 9)  # smoke rows of categories S2A, S2E (perception), O3O, E3E (relation)


def _readme(folder: Path, configs: list[tuple[str, str, str]]) -> None:
    """A dataset card declaring (config name, split, file pattern) triples, as the Hub repositories do."""
    lines = ["---", "configs:"]
    for name in dict.fromkeys(name for name, _, _ in configs):
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {pattern}" for n, split, pattern in configs if n == name]
    (folder / "README.md").write_text("\n".join([*lines, "---", ""]))


def _parquet(folder: Path, split: str, rows: list[dict], features: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in features}
    table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    table.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def _strings(*names: str) -> dict:
    return {name: datasets.Value("string") for name in names}


IMAGE = {"image": datasets.Image()}


def scenes() -> list[tuple[dict, object, dict]]:
    """The first `SCENES` held-out shapes scenes: (scene, its image, its docs by smoke task)."""
    return [(scene, draw_scene(scene), docs) for scene, docs in list(eval_scenes())[:SCENES]]


def write_mme(root: Path) -> Path:
    folder = root / "lmms-lab-encoder" / "MME"
    rows = [
        {**doc, "question_id": scene["image"], "category": MME_CATEGORIES[doc["category"]], "image": image}
        for scene, image, docs in scenes()
        for doc in docs["shapes_yesno"]
    ]
    _parquet(folder / "data", "test", rows, _strings("question_id", "question", "answer", "category") | IMAGE)
    return folder


def write_vqav2(root: Path) -> Path:
    folder = root / "lmms-lab-encoder" / "VQAv2"
    rows = []
    for index, (_, image, docs) in enumerate(scenes()):
        (doc,) = docs["shapes_vqa"]
        kind = "number" if doc["category"] == "count" else "other"
        rows.append(
            {
                "question_type": doc["question"].split(" is ")[0].lower(),
                "multiple_choice_answer": doc["answer"],
                "answers": doc["answers"],
                "image_id": index,
                "answer_type": kind,
                "question_id": index * 10,
                "question": doc["question"],
                "image": image,
            }
        )
    answer = _strings("answer", "answer_confidence") | {"answer_id": datasets.Value("int64")}
    features = _strings("question_type", "multiple_choice_answer", "answer_type", "question") | IMAGE
    features |= {"answers": [answer], "image_id": datasets.Value("int64"), "question_id": datasets.Value("int64")}
    _parquet(folder / "data", "validation", rows, features)
    return folder


def _mmbench_rows() -> list[dict]:
    rows = []
    for index, (_, image, docs) in enumerate(scenes()):
        (doc,) = docs["shapes_mcq"]
        letters = [letter for letter in "ABCD" if doc[letter] is not None]
        options = [doc[letter] for letter in letters]
        truth = options[letters.index(doc["answer"])]
        for copy, shift in ((index, 0), (index + CIRCULAR_OFFSET, 1)):  # the question and one circular copy
            rotated = options[shift:] + options[:shift]
            row = dict(zip("ABCD", rotated + [None] * (4 - len(rotated)), strict=True))
            row |= {"index": copy, "question": doc["question"], "hint": None, "answer": "ABCD"[rotated.index(truth)]}
            row |= {"category": doc["category"], "image": image, "source": "shapes", "split": "dev", "comment": None}
            rows.append(row | {"L2-category": "finegrained_perception (instance-level)"})
    return rows


def write_mmbench(root: Path) -> Path:
    """English and Chinese subsets (the same rows: the tiny model reads English only)."""
    folder = root / "lmms-lab-encoder" / "MMBench"
    features = _strings("question", "hint", "answer", "A", "B", "C", "D", "category", "source", "L2-category")
    features |= _strings("comment", "split") | {"index": datasets.Value("int64")} | IMAGE
    for subset in ("en", "cn"):
        _parquet(folder / subset, "dev", _mmbench_rows(), features)
    _readme(folder, [(subset, "dev", f"{subset}/dev-*.parquet") for subset in ("en", "cn")])
    return folder


def write_mmvet(root: Path) -> Path:
    folder = root / "lmms-lab-encoder" / "MMVet"
    rows = [
        {"question_id": f"v1_{i}", "question": doc["question"], "answer": doc["answer"], "image": image}
        | {"image_source": "shapes", "capability": ["rec"]}
        for i, (_, image, docs) in enumerate(scenes()[::2])
        for doc in docs["shapes_vqa"]
    ]
    features = _strings("question_id", "question", "answer", "image_source") | IMAGE
    _parquet(folder / "data", "test", rows, features | {"capability": [datasets.Value("string")]})
    return folder


def _smoke(name: str) -> list[dict]:
    path = ensure_smoke_video_data() / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _copy_clip(video: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ensure_smoke_video_data() / video, target)


def write_videomme(root: Path) -> Path:
    """The first rows, whose clips cycle through short, medium and long."""
    folder = root / "lmms-eval" / "Video-MME"
    rows = [doc | {"url": f"https://www.youtube.com/watch?v={doc['videoID']}"} for doc in _smoke("smoke_videomme")]
    rows = rows[:VIDEO_ROWS]
    for row in rows:
        _copy_clip(f"videos/{row['videoID']}.mp4", folder / "unpacked" / "data" / f"{row['videoID']}.mp4")
    columns = _strings("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id")
    features = columns | _strings("task_type", "question", "answer") | {"options": [datasets.Value("string")]}
    _parquet(folder / "videomme", "test", rows, features)
    return folder


def write_longvideobench(root: Path) -> Path:
    folder = root / "longvideobench" / "LongVideoBench"
    folder.mkdir(parents=True)
    rows = []
    smoke = _smoke("smoke_longvideobench")
    for doc in [smoke[i] for i in LVB_ROWS]:
        name = Path(doc["video_path"]).name
        _copy_clip(doc["video_path"], folder / "unpacked" / "videos" / name)
        options = [doc[f"option{k}"] for k in range(5) if doc[f"option{k}"] != "N/A"]
        rows.append(
            doc
            | {"video_path": name, "video_id": Path(name).stem, "candidates": options, "subtitle_path": f"{name}.json"}
            | {"starting_timestamp_for_subtitles": 0, "question_wo_referring_query": doc["question"], "view_count": 1}
        )
    (folder / "lvb_val.json").write_text(json.dumps(rows))
    _readme(folder, [("default", "validation", "lvb_val.json")])
    return folder


def write_mvbench(root: Path) -> Path:
    """The smoke clips' three subtasks with `VIDEO_ROWS` rows, every other subtask one of those rows."""
    from lmms_eval.tasks.mvbench.utils import DATA_LIST

    folder = root / "OpenGVLab" / "MVBench"
    (folder / "json").mkdir(parents=True)
    stand_in = {name: _smoke(f"smoke_mvbench_{name}")[:VIDEO_ROWS] for name in MVBENCH_SUBTASKS}
    spare = stand_in["moving_attribute"][:1]
    for subtask in sorted(DATA_LIST):
        rows = [doc | {"video": Path(doc["video"]).name} for doc in stand_in.get(subtask, spare)]
        for doc, row in zip(stand_in.get(subtask, spare), rows, strict=True):
            _copy_clip(doc["video"], folder / "unpacked" / DATA_LIST[subtask] / row["video"])
        (folder / "json" / f"{subtask}.json").write_text(json.dumps(rows))
    _readme(folder, [(subtask, "train", f"json/{subtask}.json") for subtask in sorted(DATA_LIST)])
    return folder


WRITERS = (write_vqav2, write_mme, write_mmbench, write_mmvet, write_videomme, write_longvideobench, write_mvbench)


def write_root(root: Path) -> Path:
    for write in WRITERS:
        write(root)
    return root
