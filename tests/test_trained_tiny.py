"""The trained tiny model's pieces: the shapes data, sin/cos tower positions, the checkpoint's checks."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import compose_config

from evoprune.harness.models import load_model, sincos_2d
from evoprune.harness.shapes_data import (
    CELL_NAMES,
    CHANCE,
    TASKS,
    describe,
    ensure_shapes_data,
    foreground_patches,
    make_scene,
    scene_docs,
    training_docs,
)
from evoprune.harness.trained_checkpoint import CheckpointError


def _answers_match_scene(scene, docs):
    by_cell = {CELL_NAMES[s["cell"]]: s for s in scene["shapes"]}
    colors = {s["color"] for s in scene["shapes"]}
    for doc in docs["shapes_vqa"] + docs["shapes_mcq"]:
        truth = doc["answer"] if "answers" in doc else doc[doc["answer"]]
        question = doc["question"]
        if doc["category"] == "count":
            assert truth == str(len(scene["shapes"]))
        else:
            where = question.split(" at the ")[1].rstrip("?")
            assert truth == by_cell[where]["color" if doc["category"] == "color_at" else "shape"]
    yes, no = docs["shapes_yesno"]
    assert (yes["answer"], no["answer"]) == ("Yes", "No") and yes["category"] == no["category"]
    if yes["category"] == "existence":
        assert yes["question"].split()[3] in colors and no["question"].split()[3] not in colors


def test_every_answer_follows_from_its_scene():
    rng = np.random.default_rng(0)
    for index in range(60):
        scene = make_scene(rng, f"s{index}")
        assert 2 <= len(scene["shapes"]) <= 5 and len({s["cell"] for s in scene["shapes"]}) == len(scene["shapes"])
        _answers_match_scene(scene, scene_docs(index, scene, rng))


def test_eval_split_is_deterministic_and_disjoint_from_training(tmp_path):
    first = ensure_shapes_data(target_dir=tmp_path / "a")
    second = ensure_shapes_data(target_dir=tmp_path / "b")
    for task in TASKS:
        assert (first / f"{task}.jsonl").read_bytes() == (second / f"{task}.jsonl").read_bytes()
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["samples"] == {"shapes_vqa": 60, "shapes_yesno": 120, "shapes_mcq": 60}
    assert manifest["chance"]["shapes_vqa"]["color_at"] == pytest.approx(1 / 6) and CHANCE == manifest["chance"]
    evaluation = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (first / "images").glob("*.png")}
    for _, image, _ in training_docs(200, seed=0):
        path = tmp_path / "train.png"
        image.save(path, format="PNG")
        assert hashlib.sha256(path.read_bytes()).hexdigest() not in evaluation


def test_description_and_foreground_follow_the_scene():
    scene = make_scene(np.random.default_rng(3), "s")
    words = describe(scene).split(", ")
    ordered = sorted(scene["shapes"], key=lambda item: item["cell"])
    assert words == [f"{CELL_NAMES[s['cell']]} {s['color']} {s['shape']}" for s in ordered]
    mask = foreground_patches(scene, 14).reshape(24, 24)
    covered = np.zeros((24, 24), dtype=bool)
    for item in scene["shapes"]:
        left, top, right, bottom = item["box"]
        for y in range(top, bottom + 1):
            for x in range(left, right + 1):
                covered[y // 14, x // 14] = True
    assert np.array_equal(mask, covered)


def _train_tiny():
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import train_tiny

    return train_tiny


def test_word_probes_target_what_the_words_refer_to():
    train_tiny = _train_tiny()
    colors = list(train_tiny.COLORS)
    shapes = [{"color": "red", "cell": 0, "shape": "circle"}, {"color": "blue", "cell": 4, "shape": "square"}]
    text = "Is the red shape to the left of the green shape? What is at the top left? And at the top?"
    targets = [
        (text[:end].split()[-1], head, cls) for end, head, cls in train_tiny.probe_targets(text, {"shapes": shapes})
    ]
    assert targets == [
        ("red", "where", 0),
        ("green", "where", 9),  # absent: GRID²; "left" in "to the left of" names no cell
        ("left", "color", colors.index("red")),
        ("left", "shape", train_tiny.SHAPES.index("circle")),
        ("top", "color", len(colors)),  # an empty cell: the last class
        ("top", "shape", len(train_tiny.SHAPES)),
    ]


def test_training_rounds_ask_each_task_once_per_round():
    for scene, image, docs in training_docs(3, seed=5, rounds=3):
        assert image.size == (336, 336) and len(scene["shapes"]) >= 2
        assert [len(docs[task]) for task in TASKS] == [3, 6, 3]
        assert {doc["category"] for doc in docs["shapes_vqa"]} == {"color_at", "count", "shape_at"}


def test_sincos_positions_encode_row_and_column():
    table = sincos_2d(24, 64)
    assert table.shape == (576, 64)
    assert torch.equal(table[0, :32], table[5, :32])  # same row, same first half
    assert torch.equal(table[0, 32:], table[24, 32:])  # same column, same second half
    assert len({tuple(row.tolist()) for row in table}) == 576
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(24, 66)


def _trained_cfg(*overrides):
    return compose_config("model=tiny_llava_trained", *overrides).model


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of two training steps (the script's code path, not a useful model)."""
    train_tiny = _train_tiny()
    out = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    train_tiny.main(
        [
            "--images",
            "4",
            "--rounds",
            "2",
            "--steps",
            "2",
            "--batch",
            "4",
            "--eval-every",
            "0",
            "--probe-layer",
            "2",
            "--out",
            str(out),
        ]
    )
    return out


def test_checkpoint_loads_its_trained_weights_on_the_seeded_tower(small_checkpoint):
    from safetensors.torch import load_file

    cfg = _trained_cfg(f"model.checkpoint.path={small_checkpoint}")
    loaded = load_model(cfg, torch.device("cpu"), torch.float32, seed=123)  # the run's seed: not the tower's
    state = load_file(str(small_checkpoint))
    params = dict(loaded.model.named_parameters())
    assert all(torch.equal(params[name], tensor) for name, tensor in state.items())
    assert not any(name.startswith("model.vision_tower.") for name in state)
    again = load_model(cfg, torch.device("cpu"), torch.float32, seed=7)
    tower, tower_again = loaded.model.model.vision_tower, again.model.model.vision_tower
    assert all(torch.equal(a, b) for a, b in zip(tower.parameters(), tower_again.parameters(), strict=True))


def test_missing_corrupt_or_mismatched_checkpoints_are_refused(small_checkpoint, tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(CheckpointError, match="is missing; rebuild it with: python scripts/train_tiny.py"):
        load_model(_trained_cfg(f"model.checkpoint.path={missing}"), torch.device("cpu"), torch.float32, 0)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(small_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(_trained_cfg(f"model.checkpoint.path={corrupt}"), torch.device("cpu"), torch.float32, 0)
    seed = _trained_cfg(f"model.checkpoint.path={small_checkpoint}", "model.checkpoint.tower_seed=1")
    with pytest.raises(CheckpointError, match="was made with tower_seed=0, but model 'tiny_llava_trained' has"):
        load_model(seed, torch.device("cpu"), torch.float32, 0)
    shapes = _trained_cfg(f"model.checkpoint.path={small_checkpoint}", "model.tiny.text.num_layers=2")
    with pytest.raises(CheckpointError, match="was made with tiny="):
        load_model(shapes, torch.device("cpu"), torch.float32, 0)


def test_run_py_without_the_checkpoint_exits_2_naming_file_and_command(tmp_path):
    from conftest import run_py

    missing = tmp_path / "none.safetensors"
    result = run_py("model=tiny_llava_trained", f"model.checkpoint.path={missing}", f"output_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"trained checkpoint {missing} is missing" in result.stderr
    assert "python scripts/train_tiny.py --model tiny_llava_trained" in result.stderr
    assert not (tmp_path / "tiny_llava_trained").exists()


def test_shapes_suite_runs_and_scores_through_the_harness(tmp_path):
    from evoprune.harness import runner

    cfg = compose_config("benchmark=shapes_image", "limit=2", f"output_dir={tmp_path}", "progress=false")
    assert runner.evaluate(cfg) == 0
    metrics = json.loads((tmp_path / "tiny_llava" / "shapes_image-limit2" / "none-all" / "metrics.json").read_text())
    assert {"shapes_vqa", "shapes_yesno", "shapes_mcq"} <= set(metrics["tasks"])
