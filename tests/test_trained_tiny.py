"""The trained tiny model's pieces: the shapes data, sin/cos tower positions, the training script's tokenizer,
guide and packing, the checkpoint's checks, and every pruner at the full budget answering as Native."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from conftest import (
    REPO_ROOT,
    answers_and_logits,
    assert_packed_as_alone,
    chance_of_at_least,
    compose_config,
    train_tiny_script,
)

from evoprune.harness.data.generated_data import COLORS, SHAPES
from evoprune.harness.data.shapes_data import (
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
from evoprune.harness.models.loading import load_model, sincos_2d
from evoprune.harness.models.trained_checkpoint import CheckpointError
from evoprune.harness.training.examples import Examples
from evoprune.harness.training.guide import CATEGORIES, COUNT_HEADS, SHAPE_HEADS, AttentionGuide
from evoprune.harness.training.prompts import referents, task_prompts
from evoprune.harness.training.trainer import sequences, untrained_model


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


def test_referents_are_the_shapes_the_question_names_in_order():
    red = {"color": "red", "cell": 0, "shape": "circle"}
    blue = {"color": "blue", "cell": 4, "shape": "square"}
    scene = {"shapes": [red, blue]}
    question = "Is the green shape to the left of the red shape?"
    named = referents(question, "left_of", scene)
    # green is absent; "left" in "to the left of" names no cell
    assert [(item, question[start:end]) for item, (start, end) in named] == [(None, "green"), (red, "red")]
    question = "What shape is at the center?"
    assert [(item, question[slice(*span)]) for item, span in referents(question, "shape_at", scene)] == [
        (blue, "center")
    ]
    assert referents("How many shapes are there?", "count", scene) == [(red, None), (blue, None)]


@pytest.fixture(scope="module")
def shapes_examples():
    cfg = _trained_cfg()
    loaded = untrained_model(cfg, 600, training_docs(3, seed=0, rounds=2))
    return loaded, Examples(loaded, cfg, training_docs(3, seed=0, rounds=2), 1, "test")


def test_the_tokenizer_is_learned_deterministically_with_each_place_one_token(shapes_examples):
    loaded, _ = shapes_examples
    again = untrained_model(_trained_cfg(), 600, training_docs(3, seed=0, rounds=2))
    assert loaded.tokenizer.backend_tokenizer.to_str() == again.tokenizer.backend_tokenizer.to_str()
    tokens = loaded.tokenizer.tokenize("Is the shape at the bottom right red?")
    assert "at the bottom right" in tokens and len(tokens) < 10
    ids = loaded.tokenizer("What color is the shape at the top left? ASSISTANT: yellow").input_ids
    assert (
        loaded.tokenizer.decode(ids, skip_special_tokens=True)
        == "What color is the shape at the top left? ASSISTANT: yellow"
    )
    byte_level = untrained_model(_trained_cfg(), 0, [])
    assert len(byte_level.tokenizer) < len(loaded.tokenizer)
    towers = [model.model.model.vision_tower.state_dict() for model in (loaded, byte_level)]
    assert all(torch.equal(towers[0][name], towers[1][name]) for name in towers[0])  # the tower ignores the vocabulary


def test_guides_look_up_each_named_place_at_its_word_and_read_it_from_the_last_token(shapes_examples):
    loaded, examples = shapes_examples
    scenes = [scene for scene, _, _ in training_docs(3, seed=0, rounds=2)]
    decode = loaded.tokenizer.decode
    checked = set()
    for index, _, suffix, answer, label, guides in examples.items:
        if label == "describe":
            assert guides == []
            continue
        scene = scenes[index]
        final = len(suffix) - 1
        by_depth = {(depth, head, at): (kind, keys, attrs) for depth, head, at, kind, keys, attrs in guides}
        kind, keys, asked = by_depth[0, 2, final]
        assert decode([suffix[k] for k in keys]).strip().endswith("?")
        assert CATEGORIES[asked["category"]] == label.split("/")[1]
        if label.endswith("/color_at") and not label.startswith("shapes_yesno"):
            (word,) = {at for depth, head, at, kind, *_ in guides if depth == 0 and kind == "image" and at != final}
            cell = CELL_NAMES.index(decode([suffix[word]]).strip().removeprefix("at the "))
            item = next(item for item in scene["shapes"] if item["cell"] == cell)
            kind, patches, attributes = by_depth[0, 0, word]
            assert kind == "image" and attributes["color"] == list(COLORS).index(item["color"])
            assert np.array_equal(np.flatnonzero(foreground_patches({**scene, "shapes": [item]}, 14)), patches)
            kind, keys, carried = by_depth[1, 0, final]
            box_kind, box, told = by_depth[0, SHAPE_HEADS, word]
            assert box_kind == "image" and np.array_equal(box, patches)
            assert told == {"shape": SHAPES.index(item["shape"])}
            assert kind == "text" and keys.tolist() == [word] and carried == {**attributes, **told}
            checked.add("color_at")
        if label.startswith("shapes_mcq"):
            letter = decode(answer[:-1])
            kind, (option_word,), attributes = by_depth[2, 0, final]
            assert attributes == {"letter": "ABCD".index(letter)}
            lines = loaded.tokenizer.decode(suffix).splitlines()
            assert decode([suffix[option_word]]).strip() in next(
                line for line in lines if line.startswith(f"{letter}. ")
            )
            letters = {at: (keys, told) for depth, head, at, _, keys, told in guides if depth == 0 and "letter" in told}
            assert len(letters) >= 3 and option_word in letters
            for keys, told in letters.values():  # each option's word reads its letter
                assert decode([suffix[k] for k in keys]).strip().startswith("ABCD"[told["letter"]])
            assert not any(at in letters for depth, _, at, *_ in guides if depth > 0)  # the last token picks
            checked.add("mcq")
        if label.endswith("count"):
            occupied = [int(any(item["cell"] == cell for item in scene["shapes"])) for cell in range(9)]
            kind, patches, told = by_depth[0, COUNT_HEADS, final]
            assert told == {"cells": occupied} and (1, 0, final) not in by_depth
            assert np.array_equal(patches, np.flatnonzero(foreground_patches(scene, 14)))
            assert by_depth[1, None, final][2] == {"count": len(scene["shapes"]) - 2}  # counts run 2-5
            checked.add("count")
    assert checked == {"color_at", "mcq", "count"}


def test_packed_items_score_as_if_each_had_its_own_sequence(shapes_examples):
    loaded, examples = shapes_examples
    model = loaded.model
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        items = examples.by_scene()[1]
        assert_packed_as_alone(model, examples, [items[:3], items[3:]])
    model.set_attn_implementation("sdpa")


def test_the_guide_measures_the_models_own_attention(shapes_examples):
    loaded, examples = shapes_examples
    model = loaded.model
    model.set_attn_implementation("eager")
    guide = AttentionGuide(model.model.language_model, 0, spread_weight=3.0)
    rows = [[item for item in examples.by_scene()[0] if item[4] != "describe"]]
    with torch.no_grad():
        embeds, _, mask, positions, guides = sequences(model, examples, rows, 0.3, torch.Generator().manual_seed(0))
        attentions = model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_attentions=True
        ).attentions
        patches = [guide_ for guide_ in guides if guide_[0] == -1]  # each image token's shape (none: 0)
        ((_, _, positions, shapes),), scene = patches, rows[0][0][0]
        assert len(positions) == len(shapes) and (shapes > 0).sum() == examples.foreground[scene].sum()
        looks = []
        for depth, row, at, heads, keys, _, visible in (guide_ for guide_ in guides if guide_[0] >= 0):
            if not len(keys):  # a probe: told, not looked
                continue
            for head in heads if isinstance(heads, tuple) else (heads,):
                _check_look(guide, attentions, looks, depth, row, at, head, keys, visible)
        together, _ = guide.loss([target for target, _ in looks])  # all layers and heads at once: the mean
        assert torch.allclose(together, torch.stack([alone for _, alone in looks]).mean(), atol=1e-5)
    assert {guide_[0] for guide_ in guides} == {-1, 0, 1, 2}
    model.set_attn_implementation("sdpa")


def _check_look(guide, attentions, looks, depth, row, at, head, keys, visible):
    """One head's look loss is -log(its eager attention's mass on the keys); spread evenly (as one of a tuple of
    heads), KL(uniform on the keys || that attention), times the guide's ``spread_weight``."""
    mass = attentions[depth][row, head, at, keys].sum()
    looks.append(((depth, row, at, head, keys, {}, visible), -mass.log()))
    assert torch.allclose(attentions[depth][row, head, at, visible].sum(), torch.tensor(1.0), atol=1e-5)
    only_attention, _ = guide.loss([(depth, row, at, head, keys, {}, visible)])
    assert torch.allclose(only_attention, -mass.log(), atol=1e-5)
    spread, _ = guide.loss([(depth, row, at, (head,), keys, {"shape": 0}, visible)])
    uniform = torch.full((len(keys),), 1 / len(keys))
    kl = (uniform * (uniform.log() - attentions[depth][row, head, at, keys].log())).sum()
    assert torch.allclose(spread, guide.spread_weight * kl, atol=1e-4)


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


SMALL_RUN = "--images 4 --rounds 2 --steps 2 --batch 2 --pack 3 --eval-every 0 --guide-layer 0".split()


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of two training steps (the script's code path, not a useful model)."""
    out = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    train_tiny_script().main([*SMALL_RUN, "--out", str(out)])
    return out


def test_training_again_with_the_same_seed_gives_the_same_weights(small_checkpoint, tmp_path):
    """Up to float rounding: a CPU matrix product now and then rounds differently (1e-7 after two steps, in 2 of
    6 runs); the shipped checkpoint's second run of 1400 steps matched it bit for bit."""
    from safetensors.torch import load_file

    train_tiny_script().main([*SMALL_RUN, "--out", str(tmp_path / "again.safetensors")])
    first, again = load_file(str(small_checkpoint)), load_file(str(tmp_path / "again.safetensors"))
    assert first.keys() == again.keys()
    assert [name for name in first if not torch.allclose(first[name], again[name], rtol=0, atol=1e-5)] == []
    threads = torch.get_num_threads()
    other_run = [*SMALL_RUN, "--seed", "1", "--threads", str(threads + 1), "--out", str(tmp_path / "other.safetensors")]
    train_tiny_script().main(other_run)
    assert torch.get_num_threads() == threads  # training leaves the caller's thread count as it found it
    other = load_file(str(tmp_path / "other.safetensors"))
    differ = [name for name in first if first[name].shape != other[name].shape or not first[name].equal(other[name])]
    assert len(differ) > len(first) // 2  # another seed: other training scenes (and vocabulary), other weights


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
    from evoprune.harness.evaluation import runner

    cfg = compose_config("benchmark=shapes_image", "limit=2", f"output_dir={tmp_path}", "progress=false")
    assert runner.evaluate(cfg) == 0
    metrics = json.loads((tmp_path / "tiny_llava" / "shapes_image-limit2" / "none-all" / "metrics.json").read_text())
    assert {"shapes_vqa", "shapes_yesno", "shapes_mcq"} <= set(metrics["tasks"])


PRUNERS = sorted(path.stem for path in (REPO_ROOT / "configs" / "pruner").glob("*.yaml") if path.stem != "none")


@pytest.fixture(scope="module")
def held_out_samples():
    """Two held-out questions per shapes task: (image, prompt, id)."""
    from PIL import Image

    folder, prompts, samples = ensure_shapes_data(), task_prompts(), []
    for task in TASKS:
        for line in (folder / f"{task}.jsonl").read_text().splitlines()[:2]:
            doc = json.loads(line)
            samples.append((Image.open(folder / doc["image"]).convert("RGB"), prompts[task](doc), doc["question_id"]))
    return samples


@pytest.fixture(scope="module")
def native_answers(held_out_samples):
    return answers_and_logits(compose_config("model=tiny_llava_trained"), held_out_samples)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_at_the_full_budget_answers_as_native(pruner, held_out_samples, native_answers):
    full = compose_config("model=tiny_llava_trained", f"pruner={pruner}", "budget=576")
    texts, logits = answers_and_logits(full, held_out_samples)
    assert texts == native_answers[0] and logits.shape == native_answers[1].shape
    assert torch.allclose(logits, native_answers[1], atol=1e-5)


def test_answers_depend_on_the_kept_tokens(held_out_samples, native_answers):
    """So the full-budget comparison above can fail: keeping 8 random tokens changes the logits."""
    _, logits = answers_and_logits(
        compose_config("model=tiny_llava_trained", "pruner=random", "budget=8"), held_out_samples
    )
    assert logits.shape != native_answers[1].shape or not torch.allclose(logits, native_answers[1], atol=1e-3)


SCORE = {  # a sample's score in samples.jsonl, by task (1.0: right)
    "shapes_vqa": lambda score: score["exact_match"],
    "shapes_yesno": lambda score: score["mme_perception_score"]["score"],
    "shapes_mcq": lambda score: score["accuracy"],
}


def test_the_shipped_model_answers_most_held_out_questions_of_each_task(tmp_path):
    """Native, through the harness: lmms-eval's prompts, greedy generation, the tasks' own scoring."""
    from evoprune.harness.evaluation import runner

    cfg = compose_config(
        "model=tiny_llava_trained", "benchmark=shapes_image", f"output_dir={tmp_path}", "progress=false", "warmup=0"
    )
    assert runner.evaluate(cfg) == 0
    run = tmp_path / "tiny_llava_trained" / "shapes_image" / "none-all"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    samples = json.loads((ensure_shapes_data() / "manifest.json").read_text())["samples"]
    scores = {task: [SCORE[task](row["score"]) for row in rows if row["task"] == task] for task in TASKS}
    assert {task: len(task_scores) for task, task_scores in scores.items()} == samples
    accuracy = {task: sum(task_scores) / len(task_scores) for task, task_scores in scores.items()}
    assert all(value >= 0.85 for value in accuracy.values()), accuracy
    for task, task_scores in scores.items():  # well above chance: a guesser at the task's best chance rarely does it
        assert chance_of_at_least(int(sum(task_scores)), len(task_scores), max(CHANCE[task].values())) < 1e-6


def testchance_of_at_least():
    assert chance_of_at_least(0, 10, 0.3) == pytest.approx(1.0)
    assert chance_of_at_least(2, 2, 0.5) == pytest.approx(0.25)
    assert chance_of_at_least(60, 120, 0.5) == pytest.approx(0.5 + math.comb(120, 60) / 2**121)


def test_the_shipped_checkpoint_records_how_it_was_made():
    from safetensors import safe_open

    cfg = _trained_cfg()
    with safe_open(str(REPO_ROOT / cfg.checkpoint.path), "pt") as stored:
        metadata = {key: json.loads(value) for key, value in stored.metadata().items()}
    assert metadata["command"].startswith("python scripts/train_tiny.py") and metadata["seed"] == 0
    assert metadata["tower_seed"] == cfg.checkpoint.tower_seed and metadata["model"] == "tiny_llava_trained"


def test_negative_yesno_rounds_are_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        train_tiny_script().main(["--yesno-rounds", "-1"])
    assert "--yesno-rounds=-1 must be 0 or more" in capsys.readouterr().err
