"""The trained tiny LLaVA-Video: its training clips, prompts and guide targets, packing, its checkpoint's
Native accuracy on the smoke video suite, and every pruner at the full budget answering as Native."""

import collections
import json

import numpy as np
import pytest
import torch
from conftest import (
    REPO_ROOT,
    answers_and_logits,
    assert_packed_as_alone,
    chance_of_at_least,
    compose_config,
    local_task_manager,
)
from PIL import Image

from evoprune.harness.data.generated_data import COLORS
from evoprune.harness.data.smoke_video import (
    DIRECTIONS,
    KINDS,
    TASK_KINDS,
    doc_kind,
    ensure_smoke_video_data,
    eval_clip_docs,
    render_frame,
    training_clips,
)
from evoprune.harness.inference.video import sample_frame_indices
from evoprune.harness.training.examples import ClipExamples
from evoprune.harness.training.prompts import answer_letter, task_prompts
from evoprune.harness.training.trainer import untrained_model

MODEL = "model=tiny_llava_video_trained"
TASK_GROUPS = ("smoke_mvbench", "smoke_longvideobench", "smoke_videomme")  # the benchmark's three tasks


def _video_cfg(*overrides):
    return compose_config(MODEL, *overrides).model


def _options(task: str, doc: dict) -> list[str]:
    """``doc``'s option texts in letter order."""
    if task == "smoke_longvideobench":
        return [doc[f"option{k}"] for k in range(5) if doc[f"option{k}"] != "N/A"]
    if task == "smoke_videomme":
        return [option[3:] for option in doc["options"]]
    return doc["candidates"]


def _expected_truth(clip: dict, kind: str) -> str:
    mover, newcomer = clip["mover"], clip["newcomer"]
    return {
        "color": mover["color"],
        "direction": DIRECTIONS[mover["direction"]],
        "appears": f"the {newcomer['color']} {newcomer['shape']}",
        "first": f"the {mover['color']} {mover['shape']}",
    }[kind]


def _plan(clip: dict) -> str:
    return json.dumps({key: clip[key] for key in ("frames", "fps", "size", "appear", "mover", "newcomer")})


def test_training_clips_are_not_the_evaluation_clips():
    evaluation = {_plan(clip) for clip, _ in eval_clip_docs(ensure_smoke_video_data())}
    training = [_plan(clip) for clip, _ in training_clips(300, seed=0)]
    assert len(evaluation) == 36 and len(set(training)) == 300 and not evaluation & set(training)
    assert [_plan(clip) for clip, _ in training_clips(3, seed=1)] != training[:3]


def test_every_training_clip_asks_every_kind_in_every_format_answered_by_the_clip():
    for clip, docs in training_clips(24, seed=0):
        assert {task: [doc_kind(task, doc) for doc in task_docs] for task, task_docs in docs.items()} == {
            task: list(kinds) for task, kinds in TASK_KINDS.items()
        }
        for task, task_docs in docs.items():
            for doc in task_docs:
                letter = answer_letter(task, doc)
                assert _options(task, doc)["ABCDE".index(letter)] == _expected_truth(clip, doc_kind(task, doc))


def test_shapes_offered_that_are_not_in_the_clip_have_colours_not_in_it():
    for clip, docs in eval_clip_docs(ensure_smoke_video_data()):
        shown = {clip[role]["color"] for role in ("mover", "newcomer")}
        present = {f"the {clip[role]['color']} {clip[role]['shape']}" for role in ("mover", "newcomer")}
        for task, task_docs in docs.items():
            for doc in (doc for doc in task_docs if doc_kind(task, doc) in ("appears", "first")):
                absent = [text for text in _options(task, doc) if text not in present]
                assert absent and not {text.split()[1] for text in absent} & shown


@pytest.fixture(scope="module")
def clip_examples():
    cfg = _video_cfg()
    loaded = untrained_model(cfg, 600, training_clips(3, seed=0))
    examples = ClipExamples(loaded, cfg, training_clips(3, seed=0), "test")
    return loaded, examples, [clip for clip, _ in training_clips(3, seed=0)]


def _pooled_colours(clip: dict, frame: int) -> np.ndarray:
    """Mean colour of each 28-pixel cell of the frame at 384 x 384 (the 13 x 13 pooled grid)."""
    image = Image.fromarray(render_frame(clip, frame)).resize((384, 384), Image.NEAREST)
    return np.asarray(image).astype(float)[:364, :364].reshape(13, 28, 13, 28, 3).mean(axis=(1, 3))


def test_looks_find_their_shapes_in_the_first_and_last_frame(clip_examples):
    """The last prompt token looks at the mover in the first frame and every shape in the last; a question's
    colour word at its shape in each (nowhere when it is not there). Looked-at cells hold part of a shape."""
    loaded, examples, clips = clip_examples
    decode = loaded.tokenizer.decode
    checked = collections.Counter()
    for index, _, suffix, _, _, guides in examples.items:
        clip = clips[index]
        final, sampled = len(suffix) - 1, sample_frame_indices(clip["frames"], 4)
        roles = {clip[role]["color"]: role for role in ("mover", "newcomer")}
        for depth, head, at, _, keys, told in (guide for guide in guides if guide[3] == "image"):
            frame = int(sampled[0 if head == 0 else -1])
            assert depth == 0 and head in (0, 1) and all(int(key) // 182 == (0 if head == 0 else 3) for key in keys)
            if at == final:
                shown = [clip["mover"]["color"]] if head == 0 else list(roles)
                expected = (
                    {"color": list(COLORS).index(shown[0])}
                    if head == 0
                    else {"colors": [int(c in roles) for c in COLORS]}
                )
                assert {key: told[key] for key in expected} == expected
                checked["last token"] += 1
            else:
                color = decode([suffix[at]]).strip()
                there = roles.get(color) == "mover" or (roles.get(color) == "newcomer" and frame >= clip["appear"])
                assert told[("first", "end")[head]] == int(there) and (len(keys) > 0) == there
                shown = [color] if there else []
                checked["colour word"] += 1
            colours = _pooled_colours(clip, frame)
            cells = np.array([colours[divmod(int(key) % 182, 14)] for key in keys]).reshape(-1, 3)
            touched = np.abs(cells - clip["background"]).max(axis=1) > 8  # some of a shape in the cell
            filled = [min(np.abs(c - COLORS[name]).max() for name in shown) < 30 for c in cells]
            assert not shown or (touched.mean() >= 0.6 and any(filled))  # a triangle leaves corners empty
    assert checked["last token"] > 20 and checked["colour word"] > 20


def test_direction_is_told_from_the_first_and_last_cells(clip_examples):
    _, examples, clips = clip_examples
    for index, _, suffix, _, label, guides in examples.items:
        mover, final = clips[index]["mover"], len(suffix) - 1
        by_look = {(at, head): told for _, head, at, kind, _, told in guides if kind == "image" and at != final}
        for at in {at for at, head in by_look if "cell" in by_look[at, 0] and "cell" in by_look[at, 1]}:
            first, last = (divmod(by_look[at, head]["cell"], 3) for head in (0, 1))
            moved = {"right": (0, 2), "left": (0, -2), "down": (2, 0), "up": (-2, 0)}[mover["direction"]]
            assert (last[0] - first[0], last[1] - first[1]) == moved
        directions = [told for *_, told in guides if "direction" in told]
        assert all(told == {"direction": list(DIRECTIONS).index(mover["direction"])} for told in directions)
        if label.endswith("/direction"):
            assert any((depth, head, at) == (1, 0, final) for depth, head, at, *_ in guides)


def test_the_last_token_reads_the_kind_and_picks_the_option_naming_the_answer(clip_examples):
    loaded, examples, clips = clip_examples
    decode = loaded.tokenizer.decode
    for index, _, suffix, answer, label, guides in examples.items:
        final, kind = len(suffix) - 1, label.split("/")[1]
        by_look = {(depth, head, at): (keys, told) for depth, head, at, _, keys, told in guides}
        assert KINDS[by_look[0, 2, final][1]["kind"]] == kind
        letter = decode(answer[:-1])
        (word,), told = by_look[2, 0, final]
        assert told == {"letter": "ABCDE".index(letter)}
        line = next(line for line in decode(suffix).splitlines() if line.startswith((f"{letter}. ", f"({letter}) ")))
        assert line.endswith(decode([suffix[word]]).strip()) or decode([suffix[word]]).strip() in line.split()
        wanted = by_look[2, None, final][1]
        if kind == "direction":
            assert wanted == {"direction": list(DIRECTIONS).index(clips[index]["mover"]["direction"])}
            assert line.endswith(decode([suffix[word]]).strip())
        else:
            named = decode([suffix[word]]).strip()
            assert wanted == {"color": list(COLORS).index(named)}
            assert named == clips[index]["newcomer" if kind == "appears" else "mover"]["color"]
        letters = [(keys, told) for (depth, head, at), (keys, told) in by_look.items() if (depth, head) == (0, 3)]
        assert len(letters) >= 3
        assert all(decode([suffix[k] for k in keys]).strip() == "ABCDE"[told["letter"]] for keys, told in letters)


def test_packed_clip_items_score_as_if_each_had_its_own_sequence(clip_examples):
    loaded, examples, _ = clip_examples
    items = examples.by_scene()[1][:5]
    assert_packed_as_alone(loaded.model, examples, [items[:2], items[2:]])


def test_training_prompts_and_visual_sequence_are_what_the_harness_feeds(clip_examples):
    """The smoke suite's first clips as training reads them: lmms-eval's prompt (the llava_vid variant) in the
    model's template, the same tokens, and the same visual sequence as the pipeline's."""
    from lmms_eval.tasks import get_task_dict

    from evoprune.harness.common.timing import StageTimer
    from evoprune.harness.inference.layout import visual_sequence
    from evoprune.harness.inference.pipeline import encode_frames, prepare_inputs, visual_tokens
    from evoprune.harness.inference.pruning import Pruner

    loaded, _, _ = clip_examples
    cfg, folder = _video_cfg(), ensure_smoke_video_data()
    clips = eval_clip_docs(folder)[:2]
    examples = ClipExamples(loaded, cfg, clips, "test", folder)
    manager = local_task_manager(REPO_ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke_video")
    manager.model_name = cfg.lmms_eval_prompts
    tasks = get_task_dict(list(TASK_KINDS), manager)
    items = iter(examples.items)
    for index, (clip, docs) in enumerate(clips):
        for task, task_docs in docs.items():
            for doc in task_docs:
                _, prefix, suffix, _, label, _ = next(items)
                pixels, prompt = prepare_inputs(loaded, str(folder / clip["video"]), tasks[task].doc_to_text(doc))
                ids = prefix + [loaded.image_token_id] + examples.shared[index] + suffix
                assert label.startswith(task) and loaded.tokenizer(prompt).input_ids == ids
        with torch.no_grad():
            features, cls_features, layer_input = encode_frames(loaded, pixels)
            tokens = visual_tokens(
                loaded, Pruner(None), features, cls_features, layer_input, "", "s", StageTimer(torch.device("cpu"))
            )
            laid_out, _ = visual_sequence(tokens.projected, None, loaded.model.model.image_newline, "grid")
            ours, _, _ = examples.visual(loaded.model, index)
        assert torch.allclose(ours[: len(laid_out)], laid_out, atol=1e-4)


def test_the_tokenizer_keeps_the_chat_markers_whole_and_has_no_bos(clip_examples):
    loaded, _, _ = clip_examples
    tokenizer = loaded.tokenizer
    ids = tokenizer("<|im_start|>user\n<image>Q<|im_end|>").input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.bos_token_id not in ids
    assert tokenizer.eos_token == "<|im_end|>" and ids[-1] == tokenizer.eos_token_id


# --- the shipped checkpoint -------------------------------------------------------------------


def test_the_shipped_video_checkpoint_records_how_it_was_made():
    from safetensors import safe_open

    cfg = _video_cfg()
    with safe_open(str(REPO_ROOT / cfg.checkpoint.path), "pt") as stored:
        metadata = {key: json.loads(value) for key, value in stored.metadata().items()}
        names = list(stored.keys())
    assert metadata["command"] == "python scripts/train_tiny.py --model tiny_llava_video_trained"
    assert metadata["seed"] == 0 and metadata["tower_seed"] == cfg.checkpoint.tower_seed
    assert metadata["model"] == "tiny_llava_video_trained" and "model.image_newline" in names
    assert not any(name.startswith("model.vision_tower.") for name in names)


def _correct(row: dict) -> bool:
    score = row["score"]
    if "mvbench_accuracy" in score:
        return score["mvbench_accuracy"]["score"] == 1
    if "lvb_acc" in score:
        return score["lvb_acc"]["parsed_pred"] == score["lvb_acc"]["answer"]
    return score["videomme_perception_score"]["score"] == 1


def test_the_shipped_video_model_answers_most_held_out_questions_of_each_task(tmp_path):
    """Native, through the harness: lmms-eval's prompts, greedy generation, the tasks' own scoring; at least
    85% of each task, and a guesser at the task's highest chance (1 / fewest options) rarely does as well."""
    from evoprune.harness.evaluation import runner

    cfg = compose_config(MODEL, "benchmark=smoke_video", f"output_dir={tmp_path}", "progress=false", "warmup=0")
    assert runner.evaluate(cfg) == 0
    run = tmp_path / "tiny_llava_video_trained" / "smoke_video" / "none-all"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    fewest = {group: 5 for group in TASK_GROUPS}
    for _, docs in eval_clip_docs(ensure_smoke_video_data()):
        for task, task_docs in docs.items():
            group = next(group for group in TASK_GROUPS if task.startswith(group))
            fewest[group] = min([fewest[group]] + [len(_options(task, doc)) for doc in task_docs])
    for group in TASK_GROUPS:
        right = [_correct(row) for row in rows if row["task"].startswith(group)]
        assert len(right) == 36 and sum(right) >= 0.85 * 36, (group, sum(right))
        assert chance_of_at_least(sum(right), len(right), 1 / fewest[group]) < 1e-6


PRUNERS = sorted(path.stem for path in (REPO_ROOT / "configs" / "pruner").glob("*.yaml") if path.stem != "none")


@pytest.fixture(scope="module")
def held_out_clip_samples():
    """Two questions on the first held-out clip: (video path, prompt, id)."""
    cfg, folder = _video_cfg(), ensure_smoke_video_data()
    prompts = task_prompts(
        REPO_ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke_video", TASK_KINDS, cfg.lmms_eval_prompts
    )
    clip, docs = eval_clip_docs(folder)[0]
    return [
        (str(folder / clip["video"]), prompts[task](docs[task][0]), task)
        for task in ("smoke_longvideobench", "smoke_videomme")
    ]


@pytest.fixture(scope="module")
def native_clip_answers(held_out_clip_samples):
    return answers_and_logits(compose_config(MODEL), held_out_clip_samples)


@pytest.mark.parametrize("pruner", [pruner for pruner in PRUNERS if pruner != "pooling"])
def test_every_pruner_at_the_full_budget_answers_as_native(pruner, held_out_clip_samples, native_clip_answers):
    """The full budget: the tower's 729 patch tokens per frame for a pruner inside it, else the 169 the LLM gets.
    (Spatial pooling has none: it averages the tower's grid before the projector, LLaVA-Video after it, so its
    13 x 13 grid holds other tokens; see the next test.)"""
    from evoprune.harness.inference.pruning import pruner_class

    cfg = compose_config(MODEL, f"pruner={pruner}")
    full = cfg.model.encoder_tokens if pruner_class(cfg.pruner).in_encoder else cfg.model.num_visual_tokens
    texts, logits = answers_and_logits(
        compose_config(MODEL, f"pruner={pruner}", f"budget={full}"), held_out_clip_samples
    )
    assert texts == native_clip_answers[0] and logits.shape == native_clip_answers[1].shape
    assert torch.allclose(logits, native_clip_answers[1], atol=1e-5)


def test_pooling_to_the_models_grid_answers_alike_but_is_not_native(held_out_clip_samples, native_clip_answers):
    cfg = compose_config(MODEL, "pruner=pooling", "budget=169")
    texts, logits = answers_and_logits(cfg, held_out_clip_samples)
    assert texts == native_clip_answers[0] and logits.shape == native_clip_answers[1].shape
    assert not torch.allclose(logits, native_clip_answers[1], atol=1e-3)
