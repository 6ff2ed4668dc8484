"""The baselines' harness glue: signals, the DART prefill, config errors, end-to-end runs."""

import json

import pytest
import torch
from conftest import compose_config

from baselines.dart_prefill import dart_prefill
from baselines.pruners import CDPrunerPruner, build_tiny_clip
from baselines.signals import clip_text_embeds
from evoprune.harness.common.errors import ConfigError
from evoprune.harness.evaluation import runner
from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer

BASELINES = ["fastervlm", "vispruner", "dart", "divprune", "cdpruner"]
NOT_IN_PAPER = ["tome", "visionzip", "pooling", "random"]


@pytest.mark.parametrize("pruner", BASELINES + NOT_IN_PAPER)
def test_run_feeds_the_llm_exactly_budget_tokens(pruner, tmp_path):
    overrides = ["limit=1", "benchmark.tasks=[smoke_vqa,smoke_mcq]", f"output_dir={tmp_path}", "progress=false"]
    cfg = compose_config(f"pruner={pruner}", "budget=64", *overrides)
    assert runner.evaluate(cfg) == 0
    run = tmp_path / "tiny_llava" / "smoke_image-limit1" / f"{pruner}-64"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["error"] is None for row in rows)
    assert all((row["visual_tokens_before"], row["visual_tokens_after"]) == (576, 64) for row in rows)
    if pruner not in ("dart", "tome"):  # DART selects inside the LLM (prefill), ToMe inside the encoder
        assert all(row["times"]["pruning"] > 0 for row in rows)


def _prompt(length=40, image=slice(5, 25)):
    torch.manual_seed(0)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[image] = True
    return torch.randn(1, length, 64), mask


def test_dart_prefill_keeping_everything_is_the_native_prefill(tiny_loaded):
    llm = tiny_loaded.model.model.language_model
    embeds, mask = _prompt()
    next_token = torch.tensor([[7]])
    with torch.no_grad():
        native = llm(inputs_embeds=embeds, use_cache=True)
        dart, kept = dart_prefill(llm, embeds, mask, budget=20)
        assert kept == 20
        assert torch.allclose(native.last_hidden_state, dart.last_hidden_state, atol=1e-5)
        step_native = llm(input_ids=next_token, cache=native.cache, use_cache=True)
        step_dart = llm(input_ids=next_token, cache=dart.cache, use_cache=True)
    assert torch.allclose(step_native.last_hidden_state, step_dart.last_hidden_state, atol=1e-5)


def test_dart_prefill_prunes_from_its_layer_on(tiny_loaded):
    llm = tiny_loaded.model.model.language_model
    embeds, mask = _prompt()
    with torch.no_grad():
        out, kept = dart_prefill(llm, embeds, mask, budget=8, layer=2)
        cached = [layer.keys.shape[2] for layer in out.cache.layers]
        assert (kept, out.last_hidden_state.shape[1]) == (8, 40 - 12)
        assert cached == [40, 40, 28, 28]  # layers below K hold the whole prompt
        step = llm(input_ids=torch.tensor([[7]]), cache=out.cache, use_cache=True)
    assert [layer.keys.shape[2] for layer in step.cache.layers] == [41, 41, 29, 29]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pruner=vispruner", "budget=64", "pruner.important_ratio=1.5"], "important_ratio=1.5"),
        (["pruner=dart", "budget=3"], "num_pivots=4"),
        (["pruner=cdpruner", "budget=64", "pruner.clip=null"], "pruner.clip.path=openai/clip-vit-large-patch14-336"),
    ],
)
def test_budgets_and_options_a_method_cannot_honour_fail_before_loading(overrides, message, no_heavy_work):
    with pytest.raises(ConfigError) as caught:
        runner.evaluate(compose_config(*overrides))
    assert message in str(caught.value)


def test_cdpruner_feeds_the_text_tower_the_raw_question():
    pruner = CDPrunerPruner(32, clip={"kind": "tiny"}, strip_instructions=["\nAnswer with one word."])
    assert pruner.question("What is red?\nAnswer with one word.") == "What is red?"


def test_long_questions_are_embedded_in_77_token_chunks():
    tokenizer = build_byte_tokenizer()
    clip = build_tiny_clip(64, tokenizer, seed=0).eval()
    with torch.no_grad():
        short = clip_text_embeds(clip, tokenizer, "What colour is the square?")
        long = clip_text_embeds(clip, tokenizer, "x" * 100)  # 100 bytes + BOS = 101 tokens
    assert short.shape == (1, 32) and long.shape == (2, 32)


def test_unpadded_last_chunk_pools_like_cdpruners_padded_one():
    tokenizer = build_byte_tokenizer()
    clip = build_tiny_clip(64, tokenizer, seed=0).eval()
    text = "y" * 90  # one full chunk of 77 tokens and a shorter last one
    ids = torch.tensor(tokenizer(text).input_ids)
    assert 77 < len(ids) < 154
    padded = torch.zeros(154, dtype=torch.long)
    padded[: len(ids)] = ids
    mask = (torch.arange(154) < len(ids)).long()
    with torch.no_grad():
        pooled = clip.text_model(input_ids=padded.view(2, 77), attention_mask=mask.view(2, 77)).pooler_output
        official = clip.text_projection(pooled)
        ours = clip_text_embeds(clip, tokenizer, text)
    assert torch.allclose(ours, official, atol=1e-5)
