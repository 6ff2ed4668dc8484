"""Offline "smoke" benchmark data: coloured shapes with VQAv2-, MME- and MMBench-style questions.

``ensure_smoke_data()`` writes, into ``evoprune/harness/tasks/smoke/data/``::

    manifest.json          format version, seed, samples per task
    images/scene_NNN.png   36 scenes of 1-3 flat shapes, several sizes (square and not)
    smoke_vqa.jsonl        one short-answer question per scene, 10 human answers each
    smoke_yesno.jsonl      a yes/no question pair for each of the first 18 scenes
    smoke_mcq.jsonl        one 3- or 4-option question per scene

The data is deterministic (same bytes every run, given the same Pillow/zlib) and tiny; it
tests plumbing and scoring, it says nothing about a model's real accuracy.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FORMAT_VERSION = 1
SEED = 20260305
N_SCENES = 36
N_YESNO_SCENES = 18
DATA_DIR = Path(__file__).resolve().parent / "tasks" / "smoke" / "data"
TASKS = ("smoke_vqa", "smoke_yesno", "smoke_mcq")

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 0),
}
SIZES = ((336, 336), (320, 240), (400, 300), (240, 320), (448, 336), (300, 400))
BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (245, 240, 225))
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
YESNO_SUFFIX = " Please answer yes or no."
MCQ_HINT = "The picture shows simple flat shapes on a plain background."


def ensure_smoke_data(force: bool = False, target_dir: Path | None = None) -> Path:
    """Generate the smoke data into ``target_dir`` (default: the task folder's ``data/``)
    unless an up-to-date copy is there; return the folder.

    Generation happens in a temporary sibling folder that is renamed into place, under an
    exclusive lock on the parent folder, so readers never see half-written data. It cannot
    detect files edited or deleted by hand inside an up-to-date folder: use ``force``.
    """
    target = Path(target_dir) if target_dir is not None else DATA_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        if force or not _is_fresh(target):
            _remove_leftovers(target)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-tmp-"))
            staging.chmod(0o755)  # mkdtemp makes it owner-only
            _write_dataset(staging)
            _publish(staging, target)
    return target


def sample_counts(data_dir: Path) -> dict[str, int]:
    """Samples per task, as recorded in the folder's manifest."""
    return dict(_read_manifest(data_dir)["samples"])


def _manifest_header() -> dict:
    return {"format_version": FORMAT_VERSION, "seed": SEED}


def _read_manifest(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "manifest.json").read_text())


def _is_fresh(data_dir: Path) -> bool:
    """True when the folder holds a manifest for this format version and seed."""
    if not (data_dir / "manifest.json").is_file():
        return False
    manifest = _read_manifest(data_dir)
    return all(manifest.get(key) == value for key, value in _manifest_header().items())


@contextmanager
def _locked(folder: Path):
    """Hold an exclusive flock on ``folder`` itself (no lock file to leave behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(target: Path) -> None:
    """Delete staging/retired folders left by an interrupted run (we hold the lock)."""
    for pattern in (f".{target.name}-tmp-*", f".{target.name}-old-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover)


def _publish(staging: Path, target: Path) -> None:
    """Swap ``staging`` in for ``target``; at every instant ``target`` is complete or absent."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
        target.rename(retired / target.name)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)


def _write_dataset(folder: Path) -> None:
    """Draw the scenes and write the three task files and the manifest into ``folder``."""
    scenes = _make_scenes(np.random.default_rng([SEED, 0]))
    (folder / "images").mkdir()
    for scene in scenes:
        _draw_scene(scene).save(folder / scene["image"], format="PNG")
    builders = {
        "smoke_vqa": (_vqa_doc, scenes),
        "smoke_yesno": (_yesno_docs, scenes[:N_YESNO_SCENES]),
        "smoke_mcq": (_mcq_doc, scenes),
    }
    samples = {}
    for task_index, (task, (build, task_scenes)) in enumerate(builders.items(), start=1):
        rng = np.random.default_rng([SEED, task_index])
        docs = _flatten(build(i, scene, rng) for i, scene in enumerate(task_scenes))
        _write_jsonl(folder / f"{task}.jsonl", docs)
        samples[task] = len(docs)
    manifest = {**_manifest_header(), "samples": samples}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _flatten(items) -> list[dict]:
    docs = []
    for item in items:
        docs.extend(item if isinstance(item, list) else [item])
    return docs


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))


# --- scenes -----------------------------------------------------------------------------


def _make_scenes(rng: np.random.Generator) -> list[dict]:
    return [_make_scene(i, rng) for i in range(N_SCENES)]


def _make_scene(index: int, rng: np.random.Generator) -> dict:
    """One image: 1-3 shapes of distinct types and colours, left to right in separate slots."""
    width, height = SIZES[index % len(SIZES)]
    n = int(rng.integers(1, 4))
    shape_ids = rng.permutation(len(SHAPES))[:n]
    color_names = list(COLORS)
    color_ids = rng.permutation(len(color_names))[:n]
    slot = width / n
    shapes = []
    for k in range(n):
        half = int(min(slot, height) * rng.uniform(0.22, 0.34))
        cx = int(slot * k + slot / 2 + rng.uniform(-0.1, 0.1) * slot)
        cy = int(height / 2 + rng.uniform(-0.2, 0.2) * (height - 2 * half))
        shapes.append(
            {"shape": SHAPES[shape_ids[k]], "color": color_names[color_ids[k]], "box": (cx - half, cy - half, cx + half, cy + half)}
        )
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return {"image": f"images/scene_{index:03d}.png", "size": (width, height), "background": background, "shapes": shapes}


def _draw_scene(scene: dict) -> Image.Image:
    image = Image.new("RGB", scene["size"], scene["background"])
    draw = ImageDraw.Draw(image)
    for item in scene["shapes"]:
        fill = COLORS[item["color"]]
        x0, y0, x1, y1 = item["box"]
        if item["shape"] == "circle":
            draw.ellipse(item["box"], fill=fill)
        elif item["shape"] == "square":
            draw.rectangle(item["box"], fill=fill)
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _others(rng: np.random.Generator, items, exclude, k: int) -> list:
    """``k`` distinct items not in ``exclude``, in random order."""
    pool = [item for item in items if item not in exclude]
    return [pool[i] for i in rng.permutation(len(pool))[:k]]


# --- smoke_vqa (VQAv2 style) --------------------------------------------------------------


def _vqa_doc(index: int, scene: dict, rng: np.random.Generator) -> dict:
    category = ("color", "count", "shape")[index % 3]
    item = _pick(rng, scene["shapes"])
    n = len(scene["shapes"])
    if category == "color":
        question, truth = f"What color is the {item['shape']}?", item["color"]
        variant, wrong = truth.capitalize(), _others(rng, COLORS, {truth}, 2)
    elif category == "count":
        question, truth = "How many shapes are there?", str(n)
        variant, wrong = NUMBER_WORDS[n], [str(m) for m in _others(rng, range(1, 5), {n}, 2)]
    else:
        question, truth = f"Which shape is {item['color']}?", item["shape"]
        variant, wrong = f"a {truth}", _others(rng, SHAPES, {truth}, 2)
    return {
        "question_id": f"vqa_{index:03d}",
        "image": scene["image"],
        "question": question,
        "answer": truth,
        "answers": _human_answers(rng, truth, variant, wrong),
        "category": category,
    }


def _human_answers(rng: np.random.Generator, truth: str, variant: str, wrong: list[str]) -> list[dict]:
    """Ten VQAv2-style annotator answers: 6-10 agree with ``truth`` (some as ``variant``,
    which the VQA normaliser maps to ``truth``), the rest are drawn from ``wrong``."""
    n_agree = int(rng.integers(6, 11))
    n_variant = int(rng.integers(0, 3))
    texts = [variant] * n_variant + [truth] * (n_agree - n_variant)
    texts += [_pick(rng, wrong) for _ in range(10 - n_agree)]
    order = rng.permutation(10)
    return [
        {"answer": texts[j], "answer_confidence": "yes" if j < n_agree else "maybe", "answer_id": k + 1}
        for k, j in enumerate(order)
    ]


# --- smoke_yesno (MME style) --------------------------------------------------------------


def _yesno_docs(index: int, scene: dict, rng: np.random.Generator) -> list[dict]:
    """A pair on one image: the first question's answer is Yes, the second's No.

    Categories cycle existence/count/color/position; a one-shape image gets existence
    instead of position."""
    category = tuple(_YESNO_QUESTIONS)[index % len(_YESNO_QUESTIONS)]
    if category == "position" and len(scene["shapes"]) < 2:
        category = "existence"
    yes_q, no_q = _YESNO_QUESTIONS[category](scene, rng)
    return [
        {
            "question_id": f"yesno_{index:03d}_{label.lower()}",
            "image": scene["image"],
            "question": question + YESNO_SUFFIX,
            "answer": label,
            "category": category,
        }
        for question, label in ((yes_q, "Yes"), (no_q, "No"))
    ]


def _existence_pair(scene: dict, rng: np.random.Generator) -> tuple[str, str]:
    present = [item["color"] for item in scene["shapes"]]
    absent = _others(rng, COLORS, set(present), 1)[0]
    return (f"Is there a {_pick(rng, present)} shape in the image?", f"Is there a {absent} shape in the image?")


def _count_pair(scene: dict, rng: np.random.Generator) -> tuple[str, str]:
    n = len(scene["shapes"])
    wrong = _others(rng, range(1, 5), {n}, 1)[0]
    return _count_question(n), _count_question(wrong)


def _count_question(n: int) -> str:
    if n == 1:
        return "Is there exactly one shape in the image?"
    return f"Are there exactly {NUMBER_WORDS[n]} shapes in the image?"


def _color_pair(scene: dict, rng: np.random.Generator) -> tuple[str, str]:
    item = _pick(rng, scene["shapes"])
    wrong = _others(rng, COLORS, {item["color"]}, 1)[0]
    return f"Is the {item['shape']} {item['color']}?", f"Is the {item['shape']} {wrong}?"


def _position_pair(scene: dict, rng: np.random.Generator) -> tuple[str, str]:
    """Shapes are stored left to right, so an earlier one is left of a later one."""
    first, second = sorted(int(i) for i in rng.permutation(len(scene["shapes"]))[:2])
    left, right = scene["shapes"][first]["shape"], scene["shapes"][second]["shape"]
    return f"Is the {left} to the left of the {right}?", f"Is the {right} to the left of the {left}?"


_YESNO_QUESTIONS = {"existence": _existence_pair, "count": _count_pair, "color": _color_pair, "position": _position_pair}


# --- smoke_mcq (MMBench style) ------------------------------------------------------------


def _mcq_doc(index: int, scene: dict, rng: np.random.Generator) -> dict:
    """Color questions have 4 options, shape questions 3 (D is null), count questions 1-4."""
    category = ("color", "shape", "count")[index % 3]
    item = _pick(rng, scene["shapes"])
    if category == "color":
        question, truth = f"What color is the {item['shape']}?", item["color"]
        choices = [truth] + _others(rng, COLORS, {truth}, 3)
        choices = [choices[i] for i in rng.permutation(4)]
    elif category == "shape":
        question, truth = f"Which shape is {item['color']}?", item["shape"]
        choices = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    else:
        question, truth = "How many shapes are in the image?", str(len(scene["shapes"]))
        choices = ["1", "2", "3", "4"]
    options = dict(zip("ABCD", choices + [None] * (4 - len(choices))))
    return {
        "question_id": f"mcq_{index:03d}",
        "image": scene["image"],
        "question": question,
        "hint": MCQ_HINT if rng.uniform() < 0.35 else None,
        **options,
        "answer": "ABCD"[choices.index(truth)],
        "category": category,
    }
