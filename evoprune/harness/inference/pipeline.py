"""Staged greedy generation for one sample (an image or a video) and one prompt, timed per stage.

One path for both: a sample carries F frames (F = 1 for an image). Stages: ``video_decode`` (reading a
video's sampled frames), ``preprocess`` (the image processor on the image or frames, the prompt), ``vision_encoder``
(all frames, in batches of ``video.frame_batch``; in-encoder pruning included), ``other`` (projector,
pooling, and the newline layout of the visual sequence: the paper's Figure 3 middle bar), ``pruning``
(post-encoder selection), ``prefill`` (the LLM over the whole prompt, LLM-side pruning included) and
``decode``. ``visual_tokens_after`` counts the visual tokens the LLM's later layers attend to (for
DART, what survives its pruning layer); newline embeddings are counted apart (``newline_tokens``).
The LLM is fed through ``inputs_embeds`` with exactly one position per element of the visual sequence,
and decoding is an explicit greedy loop over the KV cache so prefill (time to first token) and decode
are timed apart. Batch size is one: this is a latency harness.

Tokens merged inside the encoder (fewer tokens per frame than the tower's grid) are no grid: they
skip the model's pooling and get the model's ``merged_newline`` layout (`evoprune.harness.inference.layout`).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from evoprune.device_checks import deferred_checks
from evoprune.harness.common.timing import StageTimer
from evoprune.harness.inference.layout import pool_grid, visual_sequence
from evoprune.harness.inference.pruning import Pruner, VisualTokens, check_reduction, check_selection
from evoprune.harness.inference.runtime import EAGER, Runtime, graphs_compiled
from evoprune.harness.inference.video import read_video, time_instruction
from evoprune.harness.models.loading import LoadedModel
from evoprune.harness.models.tiny_tokenizers import IMAGE_TOKEN


@dataclass
class Generation:
    """One answer with its stage times (seconds) and visual token counts."""

    text: str
    times: dict[str, float]
    visual_tokens_before: int
    visual_tokens_after: int
    prompt_tokens: int
    new_tokens: int
    frames: int = 1
    newline_tokens: int = 0
    graphs_compiled: int = 0  # graphs torch.compile built during this generation (its time includes them)


def build_prompt(template: str, question: str, time_text: str = "") -> str:
    """Insert ``question`` (and a video's time instruction) into the model's prompt template."""
    if IMAGE_TOKEN in question:
        raise ValueError(f"the question already contains {IMAGE_TOKEN}; the prompt template places the image")
    return template.format(prompt=question, time_instruction=time_text)


def prepare_inputs(
    loaded: LoadedModel, visual, question: str, timer: StageTimer | None = None
) -> tuple[torch.Tensor, str]:
    """(F, 3, H, W) pixel values and the prompt for an image (PIL) or a video (a file path). With a
    ``timer``: reading the video's sampled frames is timed as ``video_decode``, the image processor and the
    prompt as ``preprocess``."""
    if isinstance(visual, Image.Image):
        if loaded.media != "image":
            raise ValueError(f"got an image, but this model reads {loaded.media}s")
        with _cpu_stage(timer, "preprocess"):
            pixel_values = loaded.image_processor(visual.convert("RGB"), return_tensors="pt").pixel_values
            prompt = build_prompt(loaded.prompt_template, question)
    elif isinstance(visual, (str, Path)):
        if loaded.media != "video":
            raise ValueError(f"got a video file ({visual}), but this model reads {loaded.media}s")
        with _cpu_stage(timer, "video_decode"):
            clip = read_video(visual, loaded.video.frames, loaded.video.decode_workers)
        with _cpu_stage(timer, "preprocess"):
            pixel_values = loaded.image_processor(list(clip.frames), return_tensors="pt").pixel_values
            template = loaded.video.time_instruction
            time_text = time_instruction(template, clip.timestamps, clip.duration) if template else ""
            prompt = build_prompt(loaded.prompt_template, question, time_text)
    else:
        raise TypeError(f"a visual must be a PIL image or a video file path, got {type(visual).__name__}")
    return pixel_values.to(loaded.device, loaded.dtype), prompt


def _cpu_stage(timer: StageTimer | None, name: str):
    return nullcontext() if timer is None else timer.stage(name, on_device=False)


def _input_ids_with_visual_run(loaded: LoadedModel, prompt: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise ``prompt`` and widen its single ``<image>`` token to ``length`` positions: (ids, run mask)."""
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids[0]
    positions = (ids == loaded.image_token_id).nonzero().flatten()
    if len(positions) != 1:
        raise ValueError(f"prompt must tokenise to exactly one {IMAGE_TOKEN}, found {len(positions)}")
    at = int(positions[0])
    run = torch.full((length,), loaded.image_token_id, dtype=ids.dtype)
    ids = torch.cat([ids[:at], run, ids[at + 1 :]])
    mask = torch.zeros(len(ids), dtype=torch.bool)
    mask[at : at + length] = True
    return ids, mask


def encode_frames(
    loaded: LoadedModel, pixel_values: torch.Tensor, runtime: Runtime = EAGER
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tower on all frames in batches: (F, N, C) feature-layer patch tokens, (F, cls, C) the
    feature layer's [CLS] output the model drops, (F, cls + N, C) the input of the layer that
    produces them."""
    tower = loaded.model.model.vision_tower
    batch = loaded.video.frame_batch if loaded.video is not None else len(pixel_values)
    features, layer_inputs = [], []
    for chunk in pixel_values.split(batch):
        hidden_states = runtime.tower(tower, chunk)
        layer = loaded.feature_layer % len(hidden_states)
        features.append(hidden_states[layer])
        layer_inputs.append(hidden_states[layer - 1])
    features = torch.cat(features)
    prefix = loaded.dropped_prefix
    return features[:, prefix:], features[:, :prefix], torch.cat(layer_inputs)


def is_on_grid(loaded: LoadedModel, features: torch.Tensor) -> bool:
    """Whether the tower's (F, N, C) output is its full patch grid (not merged inside the encoder)."""
    return features.shape[1] == loaded.encoder_tokens + loaded.cls_tokens - loaded.dropped_prefix


def lay_out(
    loaded: LoadedModel, projected: torch.Tensor, keep: torch.Tensor | None, on_grid: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The visual sequence the LLM receives and its newline mask, in the model's layout: ``grid`` for
    tokens on a square grid (the tower's, or a pruner's reduced grid), ``merged_newline`` for tokens
    merged inside the encoder or by a pruner's `reduce`."""
    layout = loaded.layout
    newlines = layout.newline if on_grid else layout.merged_newline
    newline = loaded.model.model.image_newline if newlines != "none" else None
    return visual_sequence(projected, keep, newline, newlines)


def visual_tokens(
    loaded: LoadedModel, pruner: Pruner, features, cls_features, layer_input, question: str, sample_id: str, timer
) -> VisualTokens:
    """The encoder's output through the pruner's `reduce` (timed as ``pruning``) and the projector and
    the model's pooling (``other``): the `VisualTokens` that `Pruner.select` receives."""
    model = loaded.model.model
    tokens = VisualTokens(
        features=features,
        projected=None,
        prompt=question,
        layer_input=layer_input,
        vision_tower=model.vision_tower,
        feature_layer=loaded.feature_layer,
        cls_tokens=loaded.cls_tokens,
        pool_stride=loaded.layout.pool_stride,
        embed_tokens=model.language_model.get_input_embeddings(),
        tokenizer=loaded.tokenizer,
        cls_features=cls_features,
        sample_id=sample_id,
        on_grid=is_on_grid(loaded, features),
    )
    pool = tokens.on_grid
    with timer.stage("pruning"):
        reduced = pruner.reduce(tokens)
        check_reduction(pruner, reduced, tokens)
    if reduced is not None:
        features, pool = reduced, False
        tokens = dataclasses.replace(tokens, features=reduced, on_grid=pruner.reduced_grid)
    with timer.stage("other"):
        projected = model.multi_modal_projector(features)
        if pool:
            projected = pool_grid(projected, loaded.layout.pool_stride)
    return dataclasses.replace(tokens, projected=projected)


def prefill(
    loaded: LoadedModel,
    pruner: Pruner,
    prompt: str,
    sequence: torch.Tensor,
    is_newline: torch.Tensor,
    frames: int,
    runtime: Runtime = EAGER,
):
    """The prefill stage: the prompt with ``sequence`` at its ``<image>``, through ``pruner.prefill``.

    Returns (model output with its KV cache, first generated token id, visual tokens the LLM kept,
    prompt length).
    """
    model = loaded.model.model
    input_ids, visual_run = _input_ids_with_visual_run(loaded, prompt, sequence.shape[0])
    # the run's place, read from host tensors (the tokenizer's): device tensors are only sliced
    start = int(visual_run.to(torch.uint8).argmax())
    stop = start + sequence.shape[0]
    input_ids = input_ids.to(loaded.device)
    embeds = model.language_model.get_input_embeddings()(input_ids)
    embeds[start:stop] = sequence.to(embeds.dtype)
    image_mask = visual_run.to(loaded.device)
    image_mask[start:stop] = ~is_newline
    out, visual_tokens_in_llm = runtime.prefill(pruner, model.language_model, embeds[None], image_mask, frames)
    next_id = loaded.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
    return out, next_id, visual_tokens_in_llm, int(input_ids.shape[0])


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return (set(eos) if isinstance(eos, (list, tuple)) else {eos}) | set(loaded.stop_token_ids)


def truncate_at_stop(text: str, until: list[str]) -> tuple[str, bool]:
    """(``text`` cut before the earliest occurrence of any stop string in ``until``, whether one occurred)."""
    cuts = [text.index(stop) for stop in until if stop and stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


@torch.inference_mode()
def generate(
    loaded: LoadedModel,
    pruner: Pruner,
    visual,
    question: str,
    max_new_tokens: int,
    until: list[str],
    sample_id: str = "",
    runtime: Runtime = EAGER,
    min_new_tokens: int = 0,
) -> Generation:
    """Answer ``question`` about ``visual`` (a PIL image or a video path) greedily, stopping at EOS, a
    stop string or the limit, but not before ``min_new_tokens`` (a warm-up that must reach the decode
    step). ``sample_id`` identifies the sample to the pruner (seeded methods). The pruners' value checks
    (`evoprune.device_checks`) are read after the answer: one that failed raises then."""
    with deferred_checks() as checks:
        result = _answer(loaded, pruner, visual, question, max_new_tokens, until, sample_id, runtime, min_new_tokens)
    checks.raise_failed()
    return result


def _answer(loaded, pruner, visual, question, max_new_tokens, until, sample_id, runtime, min_new_tokens):
    graphs_before = graphs_compiled()
    timer = StageTimer(loaded.device)
    model = loaded.model.model
    pixel_values, prompt = prepare_inputs(loaded, visual, question, timer)

    with timer.stage("vision_encoder"):
        features, cls_features, layer_input = encode_frames(loaded, pixel_values, runtime)
    tokens = visual_tokens(loaded, pruner, features, cls_features, layer_input, question, sample_id, timer)
    projected = tokens.projected
    with timer.stage("pruning"):
        keep = pruner.select(tokens)
        keep = check_selection(pruner, keep, tokens)
    with timer.stage("other"):
        sequence, is_newline = lay_out(loaded, projected, keep, tokens.on_grid)
    with timer.stage("prefill"):
        out, next_id, visual_tokens_in_llm, prompt_tokens = prefill(
            loaded, pruner, prompt, sequence, is_newline, projected.shape[0], runtime
        )

    eos_ids = _eos_ids(loaded)
    generated: list[int] = []
    text = ""
    with timer.stage("decode"):
        past = out.cache
        for _ in range(max_new_tokens):
            token = int(next_id)
            if token in eos_ids and len(generated) >= min_new_tokens:
                break
            generated.append(token)
            # stop strings need the text so far; without them it is decoded once, after the loop
            if until and len(generated) >= min_new_tokens:
                text, stopped = truncate_at_stop(loaded.tokenizer.decode(generated, skip_special_tokens=True), until)
                if stopped:
                    break
            if len(generated) == max_new_tokens:
                break
            next_id, past = runtime.decode(model.language_model, loaded.model.lm_head, next_id, past)

    if not until:
        text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
    frames = projected.shape[0]
    return Generation(
        text=text.strip(),
        times=timer.result(),
        visual_tokens_before=frames * loaded.num_visual_tokens,
        visual_tokens_after=int(visual_tokens_in_llm),
        prompt_tokens=prompt_tokens,
        new_tokens=len(generated),
        frames=frames,
        newline_tokens=int(is_newline.sum()),
        graphs_compiled=graphs_compiled() - graphs_before,
    )
