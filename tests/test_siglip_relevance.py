"""CDPruner's relevance signals on SigLIP (baselines/siglip_relevance.py) and the ``negate`` keyword."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.cdpruner import RELEVANCE_OFFSET, cdpruner_select, query_relevance
from baselines.siglip_relevance import (
    build_tiny_siglip,
    llm_text_embeds,
    load_siglip,
    siglip_image_embeds,
    siglip_text_embeds,
)
from evoprune.harness.common.errors import ModelUnavailableError
from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer

VISION_HIDDEN = 64


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def siglip(tokenizer):
    return build_tiny_siglip(VISION_HIDDEN, tokenizer, seed=0).eval()


def test_head_runs_on_each_token_alone(siglip):
    generator = torch.Generator().manual_seed(0)
    features = 3 * torch.randn(12, VISION_HIDDEN, generator=generator) + 1
    vision = siglip.vision_model
    with torch.no_grad():
        ours = siglip_image_embeds(siglip, features)
        one_by_one = torch.cat([vision.head(vision.post_layernorm(token)[None, None]) for token in features])
        whole = vision.head(vision.post_layernorm(features)[None])[0]
    assert ours.shape == (12, VISION_HIDDEN)
    assert torch.allclose(ours, one_by_one, atol=1e-5)
    assert (ours - whole).abs().amax(dim=-1).min() > 1e-2


def test_text_is_pooled_per_64_token_piece_padded_to_64(siglip, tokenizer):
    text = "x" * 150  # BOS + 150 bytes = 151 ids: pieces of 64, 64 and 23 (+41 pads)
    ids = tokenizer(text).input_ids
    assert len(ids) == 151
    pieces = [ids[:64], ids[64:128], ids[128:] + [tokenizer.pad_token_id] * 41]
    with torch.no_grad():
        expected = torch.cat([siglip.text_model(input_ids=torch.tensor([piece])).pooler_output for piece in pieces])
        unpadded_last = siglip.text_model(input_ids=torch.tensor([ids[128:]])).pooler_output
        ours = siglip_text_embeds(siglip, tokenizer, text)
        short = siglip_text_embeds(siglip, tokenizer, "What colour is the cube?")
    assert not torch.allclose(unpadded_last, expected[2:], atol=1e-3)  # the padding matters
    assert ours.shape == (3, VISION_HIDDEN)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert short.shape == (1, VISION_HIDDEN)


def test_llm_embedding_option_against_a_hand_computation(tokenizer):
    text = "red-cube?"  # printable ASCII without spaces: one byte-level token per character, no BOS
    embed = torch.nn.Embedding(len(tokenizer), 16)
    torch.nn.init.normal_(embed.weight, generator=torch.Generator().manual_seed(1))
    projected = torch.randn(7, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        text_embeds = llm_text_embeds(embed, tokenizer, text)
    rows = [embed.weight[tokenizer.convert_tokens_to_ids(char)] for char in text]
    assert text_embeds.shape == (len(text), 16)
    assert torch.equal(text_embeds, torch.stack(rows))
    mean_cos = torch.tensor(
        [sum(F.cosine_similarity(token, row, dim=0).item() for row in rows) / len(rows) for token in projected]
    )
    hand = (mean_cos - mean_cos.min() + RELEVANCE_OFFSET) / (mean_cos.max() - mean_cos.min())
    assert torch.allclose(query_relevance(projected, text_embeds, negate=False), hand, atol=1e-5)


def test_negate_false_reverses_the_relevance_order():
    generator = torch.Generator().manual_seed(3)
    image, text = torch.randn(20, 8, generator=generator), torch.randn(3, 8, generator=generator)
    negated, plain = query_relevance(image, text, negate=True), query_relevance(image, text, negate=False)
    assert torch.equal(query_relevance(image, text), negated)
    assert negated.argsort().tolist() == plain.argsort(descending=True).tolist()
    # budget 1 keeps the largest relevance: the least text-like token when negated, the most otherwise
    mean_cos = (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).mean(dim=-1)
    visual = torch.randn(20, 5, generator=generator)
    assert cdpruner_select(visual, image, text, 1).tolist() == [int(mean_cos.argmin())]
    assert cdpruner_select(visual, image, text, 1, negate=False).tolist() == [int(mean_cos.argmax())]


def test_siglip_head_embeddings_feed_cdpruner(siglip, tokenizer):
    generator = torch.Generator().manual_seed(4)
    features, projected = torch.randn(169, VISION_HIDDEN, generator=generator), torch.randn(169, 32)
    with torch.no_grad():
        image = siglip_image_embeds(siglip, features)
        text = siglip_text_embeds(siglip, tokenizer, "Where is the red cube?")
    kept = cdpruner_select(projected, image, text, 20, negate=False)
    assert len(set(kept.tolist())) == 20 and kept.tolist() == sorted(kept.tolist())


def test_tiny_siglip_is_seeded_and_leaves_the_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    untouched = torch.rand(4)
    torch.manual_seed(123)
    first = build_tiny_siglip(VISION_HIDDEN, tokenizer, seed=5).state_dict()
    assert torch.equal(torch.rand(4), untouched)
    again = build_tiny_siglip(VISION_HIDDEN, tokenizer, seed=5).state_dict()
    other = build_tiny_siglip(VISION_HIDDEN, tokenizer, seed=6).state_dict()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["vision_model.head.probe"], other["vision_model.head.probe"])
    assert not torch.equal(first["text_model.head.weight"], other["text_model.head.weight"])
    assert first["text_model.embeddings.token_embedding.weight"].shape[0] == len(tokenizer)
    assert first["vision_model.post_layernorm.weight"].shape == (VISION_HIDDEN,)


def test_load_siglip_names_the_path_and_the_override(tmp_path):
    missing = str(tmp_path / "no-siglip-here")
    with pytest.raises(ModelUnavailableError) as error:
        load_siglip({"kind": "hf", "path": missing, "download": False})
    assert missing in str(error.value) and "pruner.siglip.path=" in str(error.value)


def test_load_siglip_reads_a_local_copy(tmp_path, siglip, tokenizer):
    siglip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_siglip({"kind": "hf", "path": str(tmp_path)})
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in siglip.state_dict().items())
    assert loaded_tokenizer("red cube").input_ids == tokenizer("red cube").input_ids
