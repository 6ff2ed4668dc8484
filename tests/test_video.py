"""The video path: frame sampling, LLaVA-Video's pooling and newline layout, every pruner per frame,
agreement with transformers' own forward, config errors, and unreadable videos as sample errors."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, run_py

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.data.generated_data import read_manifest
from evoprune.harness.data.smoke_video import ensure_smoke_video_data
from evoprune.harness.evaluation import runner
from evoprune.harness.inference.layout import pool_grid, visual_sequence
from evoprune.harness.inference.pipeline import (
    _input_ids_with_visual_run,
    encode_frames,
    generate,
    prepare_inputs,
)
from evoprune.harness.inference.pruning import Pruner, build_pruner
from evoprune.harness.inference.video import VideoReadError, read_video, sample_frame_indices, time_instruction
from evoprune.harness.models.loading import load_model

FRAMES = 2  # frames per video in the model tests (the tiny tower costs ~0.5 s per frame on 2 cores)
QUESTION = "What color is the circle that moves across the video?"


@pytest.fixture(scope="module")
def clips():
    data = ensure_smoke_video_data()
    return data, read_manifest(data)["clips"]


@pytest.fixture(scope="module")
def video_loaded():
    cfg = compose_config("model=tiny_llava_video", "benchmark=smoke_video", f"model.video.frames={FRAMES}")
    return load_model(cfg.model, torch.device("cpu"), torch.float32, seed=cfg.seed)


def _clip(clips, shorter_than=64):
    data, manifest = clips
    clip = next(c for c in manifest if c["frames"] < shorter_than)
    return data / clip["video"], clip


# --- frame sampling ---------------------------------------------------------------------------


def test_frame_indices_are_the_model_cards_truncated_linspace():
    assert sample_frame_indices(100, 8).tolist() == [0, 14, 28, 42, 56, 70, 84, 99]  # 14.14.. → 14, 99 kept
    assert sample_frame_indices(1, 3).tolist() == [0, 0, 0]


def test_a_video_shorter_than_the_frame_count_repeats_frames():
    indices = sample_frame_indices(26, 64)
    assert len(indices) == 64 and indices[0] == 0 and indices[-1] == 25
    assert (np.diff(indices) >= 0).all() and len(set(indices.tolist())) == 26  # every frame, some twice


@pytest.mark.parametrize("workers", [2, 3])
def test_readers_side_by_side_decode_the_same_frames_in_order(clips, workers, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))  # as many cores as readers asked
    path, _ = _clip(clips, shorter_than=1000)
    one = read_video(path, 7)
    several = read_video(path, 7, workers=workers)
    assert np.array_equal(several.frames, one.frames) and several.timestamps == one.timestamps
    assert len({frame.tobytes() for frame in one.frames}) > 1  # distinct frames: a reordering would show


def test_read_video_samples_a_short_clip_with_repeats_and_times(clips):
    path, clip = _clip(clips)
    video = read_video(path, 64)
    assert video.frames.shape[:1] == (64,) and video.frames.dtype == np.uint8
    assert video.duration == pytest.approx(clip["frames"] / clip["fps"])
    assert video.timestamps[0] == 0 and video.timestamps[-1] == pytest.approx((clip["frames"] - 1) / clip["fps"])
    two = read_video(path, 2)
    text = time_instruction("{duration:.2f}|{frames}|{timestamps}", two.timestamps, two.duration)
    last = (clip["frames"] - 1) / clip["fps"]
    assert text == f"{clip['frames'] / clip['fps']:.2f}|2|0.00s,{last:.2f}s"


def test_model_card_time_instruction_character_for_character(video_loaded, clips):
    path, clip = _clip(clips)
    _, prompt = prepare_inputs(video_loaded, str(path), "Q?")
    stamps = ",".join(f"{t:.2f}s" for t in read_video(path, FRAMES).timestamps)
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>"
        f"The video lasts for {clip['frames'] / clip['fps']:.2f} seconds, and {FRAMES} frames are uniformly "
        f"sampled from it. These frames are located at {stamps}.Please answer the following questions related "
        "to this video.\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt == expected


@pytest.mark.parametrize("content, reason", [(None, "not found"), (b"", "empty"), (b"\x00moov garbage" * 50, "decode")])
def test_unreadable_videos_raise_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoReadError, match=reason) as caught:
        read_video(path, 4)
    assert str(path) in str(caught.value)


# --- pooling and newline layout ---------------------------------------------------------------


def _original_2d_pool(features, stride=2):
    """LLaVA-NeXT `get_2dPool` with mm_spatial_pool_mode=average, restated."""
    frames, tokens, dim = features.shape
    side = int(tokens**0.5)
    grid = features.view(frames, side, side, dim).permute(0, 3, 1, 2)
    grid = F.avg_pool2d(grid, stride)
    return grid.permute(0, 2, 3, 1).contiguous().view(frames, -1, dim)


def _original_add_token_per_grid(features, newline):
    """LLaVA-NeXT `add_token_per_grid` (mm_newline_position=grid), restated."""
    frames, tokens, dim = features.shape
    side = int(tokens**0.5)
    grid = features.view(frames, 1, side, side, dim).permute(4, 0, 2, 1, 3).contiguous()
    grid = grid.flatten(1, 2).flatten(2, 3)
    grid = torch.cat((grid, newline[:, None, None].expand(*grid.shape[:-1], 1)), dim=-1)
    return grid.flatten(1, 2).transpose(0, 1)


def test_average_pooling_729_to_169_is_the_original_get_2d_pool():
    features = torch.randn(3, 729, 8)
    pooled = pool_grid(features, 2)
    assert pooled.shape == (3, 169, 8)
    assert torch.equal(pooled, _original_2d_pool(features))
    # the 27th row and column are dropped (floor): cell (0, 0) averages patches 0, 1, 27, 28
    assert torch.allclose(pooled[0, 0], features[0, [0, 1, 27, 28]].mean(0))


def test_grid_newlines_are_the_original_layout():
    tokens, newline = torch.randn(4, 169, 8), torch.randn(8)
    sequence, is_newline = visual_sequence(tokens, None, newline, "grid")
    assert sequence.shape == (4 * 13 * 14, 8)
    assert torch.equal(sequence, _original_add_token_per_grid(tokens, newline))
    assert is_newline.sum() == 4 * 13 and is_newline.view(4 * 13, 14)[:, -1].all()


def test_pruned_grid_keeps_every_rows_newline_and_the_kept_tokens_in_order():
    tokens, newline = torch.arange(2 * 9 * 1, dtype=torch.float32).view(2, 9, 1), torch.tensor([-1.0])
    keep = torch.tensor([[0, 4, 5], [1, 2, 3]])  # frame 0: rows 0, 1, 1; frame 1: rows 0, 0, 1
    sequence, is_newline = visual_sequence(tokens, keep, newline, "grid")
    assert sequence.flatten().tolist() == [0, -1, 4, 5, -1, -1, 10, 11, -1, 12, -1, -1]
    assert is_newline.tolist() == [v == -1 for v in sequence.flatten().tolist()]


def test_merged_tokens_get_one_newline_per_frame_or_none():
    tokens, newline = torch.randn(3, 5, 4), torch.randn(4)
    sequence, is_newline = visual_sequence(tokens, None, newline, "frame")
    assert sequence.shape == (18, 4) and is_newline.nonzero().flatten().tolist() == [5, 11, 17]
    assert torch.equal(sequence[6:11], tokens[1])
    plain, none = visual_sequence(tokens, None, None, "none")
    assert torch.equal(plain, tokens.flatten(0, 1)) and not none.any()


@pytest.mark.parametrize("layout", ["grid", "frame"])
def test_newlines_take_the_tokens_dtype(layout):
    tokens, newline = torch.randn(2, 4, 3).to(torch.bfloat16), torch.tensor([0.1, -2.7, 3.3])  # float32
    sequence, is_newline = visual_sequence(tokens, None, newline, layout)
    assert sequence.dtype == torch.bfloat16
    assert all(torch.equal(line, newline.to(torch.bfloat16)) for line in sequence[is_newline])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pool_grid(torch.zeros(1, 10, 2), 2), "10 tokens per frame do not form a square grid"),
        (lambda: visual_sequence(torch.zeros(1, 12, 2), None, torch.zeros(2), "grid"), "12 tokens per frame do not"),
        (lambda: visual_sequence(torch.zeros(1, 4, 2), None, None, "grid"), "layout 'grid' needs a newline embedding"),
        (
            lambda: visual_sequence(torch.zeros(1, 4, 2), None, torch.zeros(2), "rows"),
            "layout='rows' is not one of: grid, frame, none",
        ),
    ],
    ids=["pool-not-square", "grid-not-square", "no-newline", "unknown-layout"],
)
def test_layout_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# --- every method per frame -------------------------------------------------------------------

METHODS = ["fastervlm", "vispruner", "divprune", "cdpruner", "dart", "evoprune"]


def _pruner(name, budget):
    cfg = compose_config("model=tiny_llava_video", "benchmark=smoke_video", f"pruner={name}", f"budget={budget}")
    return build_pruner(cfg.pruner, cfg.budget)


def _recording(select, picked):
    def recorded(tokens):
        picked.append(select(tokens))
        return picked[-1]

    return recorded


@pytest.mark.parametrize("budget", [64, 32, 16])
def test_exact_tokens_per_frame_reach_the_llm_for_every_method(video_loaded, clips, budget):
    path, _ = _clip(clips)
    for name in METHODS:
        pruner = _pruner(name, budget)
        picked = []
        if not pruner.in_encoder and name != "dart":
            pruner.select = _recording(pruner.select, picked)
        pruner.attach(video_loaded.model)
        try:
            result = generate(video_loaded, pruner, str(path), QUESTION, max_new_tokens=1, until=[])
            if name == "evoprune":
                pixels, _ = prepare_inputs(video_loaded, str(path), QUESTION)
                features, _, _ = encode_frames(video_loaded, pixels)
                assert features.shape[:2] == (FRAMES, budget), name  # merged in the tower, per frame
        finally:
            pruner.detach(video_loaded.model)
        assert (result.frames, result.visual_tokens_before) == (FRAMES, FRAMES * 169), name
        assert result.visual_tokens_after == FRAMES * budget, name
        assert result.newline_tokens == (FRAMES if name == "evoprune" else FRAMES * 13), name
        if picked:
            keep = picked[0]
            assert keep.shape == (FRAMES, budget), name
            assert all(torch.equal(row, row.unique()) for row in keep), name  # sorted, distinct
            assert int(keep.max()) < 169, name


@pytest.mark.parametrize(
    "name, per_frame, newlines",
    [("tome", 32, 1), ("visionzip", 32, 1), ("pooling", 36, 6), ("random", 32, 13)],
)
def test_baselines_not_in_the_paper_run_per_frame(video_loaded, clips, name, per_frame, newlines):
    path, _ = _clip(clips)
    pruner = _pruner(name, 32)
    pruner.attach(video_loaded.model)
    try:
        result = generate(video_loaded, pruner, str(path), QUESTION, max_new_tokens=1, until=[], sample_id="t/0")
    finally:
        pruner.detach(video_loaded.model)
    assert result.visual_tokens_after == FRAMES * per_frame  # pooling: the 6x6 grid nearest 32
    assert result.newline_tokens == FRAMES * newlines


def test_native_generation_equals_transformers_onevision_forward_on_the_same_embeddings(video_loaded, clips):
    path, _ = _clip(clips)
    ours = generate(video_loaded, Pruner(None), str(path), QUESTION, max_new_tokens=8, until=[])
    model = video_loaded.model.model
    with torch.no_grad():
        pixels, prompt = prepare_inputs(video_loaded, str(path), QUESTION)
        features, _, _ = encode_frames(video_loaded, pixels)
        tokens = pool_grid(model.multi_modal_projector(features), 2)
        sequence, _ = visual_sequence(tokens, None, model.image_newline, "grid")
        ids, run = _input_ids_with_visual_run(video_loaded, prompt, sequence.shape[0])
        embeds = model.language_model.get_input_embeddings()(ids)
        embeds[run] = sequence
        reference = video_loaded.model.generate(
            inputs_embeds=embeds[None],
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=video_loaded.tokenizer.eos_token_id,
        )
    assert ours.prompt_tokens == len(ids) and ours.visual_tokens_after == FRAMES * 169
    assert ours.text == video_loaded.tokenizer.decode(reference[0], skip_special_tokens=True).strip()
    assert ours.new_tokens == reference.shape[1]


def test_dart_keeps_frames_times_budget_over_the_whole_span_and_every_newline(video_loaded, clips):
    path, _ = _clip(clips)
    pruner = _pruner("dart", 5)
    result = generate(video_loaded, pruner, str(path), QUESTION, max_new_tokens=1, until=[])
    assert (result.visual_tokens_after, result.newline_tokens) == (FRAMES * 5, FRAMES * 13)


# --- config errors before any heavy work ------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pruner=fastervlm", "budget=170"], "budget=170 is outside the valid range [1, 169] for pruner 'fastervlm'"),
        (["pruner=dart", "budget=170"], "[1, 169] for pruner 'dart'"),
        (["pruner=evoprune", "budget=730"], "budget=730 is outside the valid range [1, 729] for pruner 'evoprune'"),
        (["model.video.frames=0"], "model.video.frames=0 must be an integer >= 1"),
        (["model.video.decode_workers=0"], "model.video.decode_workers=0 must be an integer >= 1"),
        (["benchmark=smoke_image"], "model=tiny_llava_video reads videos but benchmark=smoke_image holds images"),
    ],
)
def test_bad_video_configs_fail_before_loading(overrides, message, no_heavy_work):
    cfg = compose_config("model=tiny_llava_video", "benchmark=smoke_video", *overrides)
    with pytest.raises(ConfigError) as caught:
        runner.evaluate(cfg)
    assert message in str(caught.value)


def test_missing_llava_video_weights_fail_at_once_naming_the_id_and_the_override(tmp_path, monkeypatch):
    from evoprune.harness.common.errors import ModelUnavailableError

    monkeypatch.setattr(runner, "load_tasks", lambda *args: pytest.fail("tasks loaded before the weights check"))
    cfg = compose_config("model=llava_video_7b", "benchmark=smoke_video", f"output_dir={tmp_path}")
    with pytest.raises(ModelUnavailableError) as caught:
        runner.evaluate(cfg)
    assert "lmms-lab/LLaVA-Video-7B-Qwen2" in str(caught.value) and "model.path=" in str(caught.value)


def test_image_model_on_a_video_benchmark_is_refused(no_heavy_work):
    with pytest.raises(ConfigError, match="model=tiny_llava reads images but benchmark=smoke_video holds videos"):
        runner.evaluate(compose_config("benchmark=smoke_video"))


def test_evoprune_may_keep_more_than_the_pooled_grid_per_frame():
    cfg = compose_config("model=tiny_llava_video", "benchmark=smoke_video", "pruner=evoprune", "budget=200")
    runner.check_config(cfg)


# --- end to end -------------------------------------------------------------------------------


def test_smoke_video_runs_end_to_end_for_none_evoprune_and_every_baseline(tmp_path):
    base = ["model=tiny_llava_video", "benchmark=smoke_video", "limit=1", f"model.video.frames={FRAMES}"]
    base += [f"output_dir={tmp_path}", "progress=false", "warmup=0"]
    for name, budget in [("none", "null"), *((method, 16) for method in METHODS)]:
        assert runner.evaluate(compose_config(*base, f"pruner={name}", f"budget={budget}")) == 0, name
        run = tmp_path / "tiny_llava_video" / "smoke_video-limit1" / f"{name}-{'all' if budget == 'null' else 16}"
        rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 5 and all(row["error"] is None for row in rows), name
        tokens = FRAMES * (169 if name == "none" else 16)
        assert all(row["visual_tokens_after"] == tokens and row["frames"] == FRAMES for row in rows), name
        derived = json.loads((run / "metrics.json").read_text())["derived"]
        assert derived["mvbench_test"]["samples"] == 3 and derived["videomme_overall"]["samples"] == 1, name
        # lmms-eval's llava_vid prompt variant, as LLaVA-Video is evaluated (model.lmms_eval_prompts)
        assert next(row for row in rows if row["task"] == "smoke_videomme")["prompt"].endswith("The best answer is:")


def test_a_corrupt_video_is_a_sample_error_and_the_run_goes_on(tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(ensure_smoke_video_data().parent, tasks)
    (tasks / "data" / "videos" / "clip_000.mp4").write_bytes(b"not an mp4" * 100)
    result = run_py(
        "model=tiny_llava_video",
        "benchmark=smoke_video",
        f"output_dir={tmp_path / 'runs'}",
        f"benchmark.include_path={tasks}",
        "benchmark.synthetic_data=null",
        f"model.video.frames={FRAMES}",
        "limit=2",
        "warmup=0",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    run = tmp_path / "runs" / "tiny_llava_video" / "smoke_video-limit2" / "none-all"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    failed = [row for row in rows if row["error"]]
    assert failed and all("cannot decode video" in row["error"] and "clip_000.mp4" in row["error"] for row in failed)
    assert len(rows) == 10 and len(failed) < len(rows)  # the other clips' samples ran
    derived = json.loads((run / "metrics.json").read_text())["derived"]
    assert sum(
        entry["errors"] for name, entry in derived.items() if name.endswith(("_test", "_val", "_overall"))
    ) == len(failed)


def test_the_real_models_vision_mapping_becomes_siglip_so400m_fields():
    from transformers import SiglipVisionConfig

    from evoprune.harness.models.loading import vision_config_fields

    vision = SiglipVisionConfig(**vision_config_fields(compose_config("model=llava_video_7b").model.vision))
    assert (vision.num_hidden_layers, vision.num_attention_heads, vision.hidden_size) == (26, 16, 1152)
    assert (vision.image_size // vision.patch_size) ** 2 == 729


# The LongVideoBench paper's (arXiv 2407.15754, Table 2) question categories by level.
LVB_PAPER_PERCEPTION = {"S2E", "S2O", "S2A", "E2O", "O2E", "T2E", "T2O", "T2A"}
LVB_PAPER_RELATION = {"E3E", "O3O", "SSS", "SOS", "SAA", "T3E", "T3O", "TOS", "TAA"}


@pytest.mark.parametrize("category", sorted(LVB_PAPER_PERCEPTION | LVB_PAPER_RELATION))
def test_each_longvideobench_category_lands_in_its_papers_level_only(category):
    from evoprune.harness.results.video_metrics import in_derived

    row = {"score": {"lvb_acc": {"id": "q", "question_category": category}}}
    level = "perception" if category in LVB_PAPER_PERCEPTION else "relation"
    other = "relation" if level == "perception" else "perception"
    assert in_derived(f"longvideobench_{level}", row) and not in_derived(f"longvideobench_{other}", row)
    assert in_derived("longvideobench_val", row)


def test_an_unknown_longvideobench_category_is_an_error_not_a_guess():
    from evoprune.harness.results.video_metrics import in_derived

    with pytest.raises(ValueError, match="unknown question_category 'X9X'"):
        in_derived("longvideobench_perception", {"score": {"lvb_acc": {"id": "q", "question_category": "X9X"}}})


@pytest.mark.parametrize(
    "name, row, message",
    [
        (
            "longvideobench_perception",
            {"score": {"lvb_acc": {"id": "lvb-0417", "question_category": "X9X"}}},
            "LongVideoBench sample 'lvb-0417' has unknown question_category 'X9X'",
        ),
        (
            "videomme_overall",
            {"score": {"videomme_perception_score": {"question_id": "001-2", "duration": "brief"}}},
            "Video-MME sample '001-2' has duration 'brief', not one of ('short', 'medium', 'long')",
        ),
    ],
    ids=["longvideobench", "videomme"],
)
def test_a_sample_outside_every_split_is_named_in_the_error(name, row, message):
    from evoprune.harness.results.video_metrics import in_derived

    with pytest.raises(ValueError, match=re.escape(message)):
        in_derived(name, row)


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("x-a\t-", None),  # as mcq_acc: the tab is a space, so "-" is spaced and removed ("xa": no letter)
        ("x-a -", None),
        ("b\t(c)", "B"),
    ],
)
def test_mvbench_letter_reads_tabs_as_spaces_like_mcq_acc(reply, letter):
    from evoprune.harness.results.video_metrics import mvbench_letter

    assert mvbench_letter(reply) == letter


def test_longvideobench_answer_prefixes_are_deleted_not_blanked():
    from evoprune.harness.results.video_metrics import longvideobench_letter

    # lmms-eval deletes each prefix in turn: "The answer is" goes, and the "Best answer:" it leaves goes too
    assert longvideobench_letter("Best The answer isanswer: C") == "C"
