"""Each baseline's own overhead at 576 → 128/64/32 tokens, as a fraction of the native encoder time
(``scripts/bench_pruners.py`` is the entry point).

Real-size LLaVA-1.5 shapes with random weights (latency does not depend on weights, so nothing is downloaded):
the CLIP-L/336 tower, `LLM_WIDTH`-wide projected tokens, CLIP-L's text tower (12 layers, width 768) for
CDPruner, a 40-token prompt tail for DART's text pivots. Timed per method (`selections`) is exactly what its
harness glue runs beyond the normal forward:
  FasterVLM  CLS-row attention of layer −2 + top-k
  VisPruner  the same + the diverse-token loop on layer −2 features
  DivPrune   max-min selection on the projected tokens
  DART       the selection on layer K−1 keys and normed hidden states (the LLM layers themselves run anyway)
  CDPruner   text tower on the question + CLIP image projection + kernel + greedy DPP
Not in the paper:
  VisionZip  CLS-row attention and keys of layer −2 + dominant top-k + contextual merging
  Pooling    average pooling of the 24x24 feature grid to the nearest square grid
  Random     the seeded draw
  ToMe       merges inside the encoder: its row is the whole encoder with ToMe, not an overhead
Targets (issue 4, `TARGETS`): ≤ 2% for the first four, ≤ 5% for CDPruner; ≤ 2% for VisionZip, pooling and
random.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from baselines.cdpruner import cdpruner_select
from baselines.dart import dart_select
from baselines.divprune import divprune_select
from baselines.fastervlm import fastervlm_select
from baselines.pooling import nearest_square_side, pool_patch_grid
from baselines.random_selection import random_select, sample_seed
from baselines.signals import clip_image_embeds, clip_text_embeds, cls_attention, feature_layer_keys
from baselines.tome import ToMePruner
from baselines.visionzip import contextual_count, visionzip_tokens
from baselines.vispruner import vispruner_select
from evoprune.harness.benchmarks.machine import device_label
from evoprune.harness.benchmarks.shapes import CLIP_L_336, clip_l_text_and_projections
from evoprune.harness.benchmarks.timing import time_call, time_forward
from evoprune.harness.common.outputs import write_json, write_text
from evoprune.harness.common.paths import RESULTS_DIR
from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer

LLM_WIDTH = 4096
TARGETS = {
    "fastervlm": 0.02,
    "vispruner": 0.02,
    "divprune": 0.02,
    "dart": 0.02,
    "cdpruner": 0.05,
    "visionzip": 0.02,
    "pooling": 0.02,
    "random": 0.02,
    "tome": None,  # the encoder itself, merged: a speed-up, not an overhead
}
# Tokenised by the project's byte tokenizer (CLIP's BPE vocabulary is not available offline): 29
# tokens where CLIP's BPE would give about 9, so the text tower cost measured here is an upper bound.
QUESTION = "What colour is the umbrella?"


def selections(tower, pixels) -> dict:
    """Method → its call at a budget, on the inputs its glue sees (random where they come from the LLM)."""
    device, dtype = pixels.device, pixels.dtype
    with torch.inference_mode():
        hidden_states = tower(pixels, output_hidden_states=True).hidden_states
    features = hidden_states[-2][0, 1:]
    tokens = features.shape[0]
    projected = torch.randn(tokens, LLM_WIDTH, device=device, dtype=dtype)
    keys, normed = torch.randn(tokens + 40, LLM_WIDTH, device=device, dtype=dtype).split([tokens, 40])
    hidden, normed_text = torch.randn(tokens + 40, LLM_WIDTH, device=device, dtype=dtype).split([tokens, 40])
    tokenizer = build_byte_tokenizer()
    clip = clip_l_text_and_projections(tower.config.hidden_size, len(tokenizer)).to(device).eval()

    layer_input = hidden_states[-3]  # the input of the layer that produces the features (layer −2)

    def attention():
        return cls_attention(tower, layer_input, -2)[0].mean(0)

    def visionzip(budget):
        scores = cls_attention(tower, layer_input, -2)[0].mean(0)
        keys = feature_layer_keys(tower, layer_input, -2)[0, 1:]
        contextual = contextual_count(budget, 1, 10 / 64)
        return visionzip_tokens(features, hidden_states[-2][0, :1], scores, keys, budget - 1 - contextual, contextual)

    def cdpruner(budget):
        image_embeds = clip_image_embeds(clip, tower.post_layernorm, features)
        text_embeds = clip_text_embeds(clip, tokenizer, QUESTION)
        return cdpruner_select(projected, image_embeds, text_embeds, budget)

    return {
        "fastervlm": lambda b: fastervlm_select(attention(), b),
        "vispruner": lambda b: vispruner_select(attention(), features, b),
        "divprune": lambda b: divprune_select(projected, b),
        "dart": lambda b: dart_select(keys, hidden, b, text_keys=normed, text_hidden=normed_text),
        "cdpruner": cdpruner,
        "visionzip": visionzip,
        "pooling": lambda b: pool_patch_grid(features[None], nearest_square_side(b)),
        "random": lambda b: random_select(1, tokens, b, sample_seed(0, "bench/0")).to(device),
        "tome": lambda b: tower(pixels, output_hidden_states=True),
    }


def render(rows: list[dict], budgets: list[int], native_s: float, where: str, dtype, repeats: int) -> str:
    """The Markdown table: per method, each budget's milliseconds and share of the native encoder, the target."""
    lines = [
        f"# Baselines' own overhead vs the native CLIP-L/336 encoder ({native_s * 1e3:.1f} ms), {where}, "
        f"{str(dtype).removeprefix('torch.')}, median of {repeats}",
        "",
        "| method | " + " | ".join(f"{b} tokens" for b in budgets) + " | target |",
        "|---|" + "---:|" * (len(budgets) + 1),
    ]
    for name in dict.fromkeys(row["method"] for row in rows):
        cells = [f"{r['ms']:.1f} ms ({r['fraction_of_encoder']:.2%})" for r in rows if r["method"] == name]
        target = "whole encoder" if TARGETS[name] is None else f"≤ {TARGETS[name]:.0%}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def bench_pruners(
    device: str | torch.device, budgets: list[int], repeats: int, warmup: int, out: Path = RESULTS_DIR
) -> list[dict]:
    """Time the native encoder and every method at every budget (median of ``repeats`` after ``warmup``), write
    <out>/bench_pruners_<device>.{json,md} (atomically), print the table; returns its rows."""
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = CLIPVisionConfig(**CLIP_L_336)
    tower = CLIPVisionModel(config).to(device, dtype).eval()
    pixels = torch.randn(1, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    methods = selections(tower, pixels)
    # What `ToMePruner.attach` patches: a LLaVA's model.model.vision_tower, merged up to its feature layer.
    llava = SimpleNamespace(model=SimpleNamespace(vision_tower=tower), config=SimpleNamespace(vision_feature_layer=-2))
    native = time_forward(tower, pixels, repeats, warmup)
    rows = []
    for name, select in methods.items():
        for budget in budgets:
            pruner = ToMePruner(budget) if name == "tome" else None
            if pruner is not None:
                pruner.attach(llava)
            try:
                seconds = time_call(lambda: select(budget), device, repeats, warmup)  # noqa: B023
            finally:
                if pruner is not None:
                    pruner.detach(llava)
            fraction = seconds / native
            rows.append({"method": name, "budget": budget, "ms": seconds * 1e3, "fraction_of_encoder": fraction})
            rows[-1]["target"] = TARGETS[name]
            print(f"{name:10s} {budget:4d}: {seconds * 1e3:8.2f} ms = {fraction:.2%} of the encoder")

    where = device_label(device)
    table = render(rows, budgets, native, where, dtype, repeats)
    print(table)
    meta = {"device": where, "dtype": str(dtype), "native_encoder_ms": native * 1e3, "repeats": repeats}
    write_json(out / f"bench_pruners_{device.type}.json", {"meta": meta, "rows": rows})
    write_text(out / f"bench_pruners_{device.type}.md", table + "\n")
    return rows
