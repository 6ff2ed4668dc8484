"""Staged greedy generation for one image and one prompt, timed per stage.

preprocess → vision encoder → projector → post-encoder pruning → LLM prefill → decode.
``visual_tokens_after`` counts the visual tokens the LLM's later layers attend to (for DART,
which prunes inside the LLM, what survives its pruning layer).
The LLM is fed through ``inputs_embeds`` with exactly as many ``<image>`` positions as visual
tokens survive pruning, and decoding is an explicit greedy loop over the KV cache so prefill
(time to first token) and decode are timed apart. Batch size is one: this is a latency harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from evoprune.harness.models import IMAGE_TOKEN, LoadedModel
from evoprune.harness.pruning import Pruner, VisualTokens
from evoprune.harness.timing import StageTimer


@dataclass
class Generation:
    """One answer with its stage times (seconds) and visual token counts."""

    text: str
    times: dict[str, float]
    visual_tokens_before: int
    visual_tokens_after: int
    prompt_tokens: int
    new_tokens: int


def build_prompt(template: str, question: str) -> str:
    """Insert ``question`` into the model's prompt template (which holds the one ``<image>``)."""
    if IMAGE_TOKEN in question:
        raise ValueError(f"the question already contains {IMAGE_TOKEN}; the prompt template places the image")
    return template.format(prompt=question)


def _input_ids_with_image_run(loaded: LoadedModel, prompt: str, num_image_tokens: int) -> torch.Tensor:
    """Tokenise ``prompt`` and widen its single ``<image>`` token to ``num_image_tokens`` copies."""
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids[0]
    positions = (ids == loaded.image_token_id).nonzero().flatten()
    if len(positions) != 1:
        raise ValueError(f"prompt must tokenise to exactly one {IMAGE_TOKEN}, found {len(positions)}")
    at = int(positions[0])
    run = torch.full((num_image_tokens,), loaded.image_token_id, dtype=ids.dtype)
    return torch.cat([ids[:at], run, ids[at + 1 :]])


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _truncate_at_stop(text: str, until: list[str]) -> tuple[str, bool]:
    cuts = [text.index(stop) for stop in until if stop and stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


@torch.inference_mode()
def generate(
    loaded: LoadedModel,
    pruner: Pruner,
    image: Image.Image,
    question: str,
    max_new_tokens: int,
    until: list[str],
) -> Generation:
    """Answer ``question`` about ``image`` greedily, stopping at EOS, a stop string or the limit."""
    timer = StageTimer(loaded.device)
    model = loaded.model.model
    with timer.stage("preprocess", on_device=False):
        prompt = build_prompt(loaded.prompt_template, question)
        pixel_values = loaded.image_processor(image.convert("RGB"), return_tensors="pt").pixel_values
        pixel_values = pixel_values.to(loaded.device, loaded.dtype)

    with timer.stage("vision_encoder"):
        hidden_states = model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        selected = hidden_states[loaded.feature_layer]
        features = selected[0] if loaded.keeps_cls else selected[0, 1:]
    with timer.stage("projector"):
        projected = model.multi_modal_projector(features)
    with timer.stage("pruning"):
        tokens = VisualTokens(
            features=features,
            projected=projected,
            prompt=question,
            hidden_states=hidden_states,
            vision_tower=model.vision_tower,
            feature_layer=loaded.feature_layer,
        )
        keep = pruner.select(tokens)
        if keep is not None:
            projected = projected[keep]

    embed = model.language_model.get_input_embeddings()
    with timer.stage("prefill"):
        input_ids = _input_ids_with_image_run(loaded, prompt, projected.shape[0]).to(loaded.device)
        embeds = embed(input_ids)
        image_mask = input_ids == loaded.image_token_id
        embeds = embeds.masked_scatter(image_mask[:, None], projected.to(embeds.dtype))
        out, visual_tokens_in_llm = pruner.prefill(model.language_model, embeds[None], image_mask)
        next_id = loaded.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)

    eos_ids = _eos_ids(loaded)
    generated: list[int] = []
    text = ""
    with timer.stage("decode"):
        past = out.past_key_values
        for _ in range(max_new_tokens):
            token = int(next_id)
            if token in eos_ids:
                break
            generated.append(token)
            if until:  # stop strings need the text so far; without them it is decoded once, after the loop
                text, stopped = _truncate_at_stop(loaded.tokenizer.decode(generated, skip_special_tokens=True), until)
                if stopped:
                    break
            if len(generated) == max_new_tokens:
                break
            out = model.language_model(input_ids=next_id[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_id = loaded.model.lm_head(out.last_hidden_state[:, -1]).argmax(-1)

    if not until:
        text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
    return Generation(
        text=text.strip(),
        times=timer.result(),
        visual_tokens_before=loaded.num_visual_tokens,
        visual_tokens_after=visual_tokens_in_llm,
        prompt_tokens=int(input_ids.shape[0]),
        new_tokens=len(generated),
    )
