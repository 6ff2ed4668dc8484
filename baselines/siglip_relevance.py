"""CDPruner's query relevance on LLaVA-Video's SigLIP tower (google/siglip-so400m-patch14-384): two options.

CDPruner (baselines/cdpruner.py) weighs each visual token by its relevance to the question: the mean
cosine between the token's embedding and the question's embeddings in a shared image-text space. The
official code (Theia-4869/CDPruner, ``clip_encoder.py`` and ``llava_arch.py``) is CLIP only: each patch
token of vision layer −2 goes through CLIP's post_layernorm and ``visual_projection``; the question
goes through ``CLIPTextModelWithProjection`` in 77-token chunks. No code runs CDPruner on SigLIP, and
SigLIP has no per-token projection: it reaches its image-text space only through its attention-pooling
head, which LLaVA-Video deletes. LLaVA-Video feeds the LLM 169 tokens per frame: the output of 26
SigLIP layers (27×27 = 729 tokens, no CLS, before post_layernorm) → projector → 2×2 average pooling
(13×13); CDPruner selects per frame among those 169. Two options, each giving (N, D) image and (M, D)
text embeddings for `cdpruner_select`:

- ``siglip_head``: `siglip_image_embeds` (post_layernorm, then SigLIP's
  ``SiglipMultiheadAttentionPoolingHead`` on each token alone) and `siglip_text_embeds` (SigLIP's text
  tower on the raw question). Needs the standalone SigLIP checkpoint (`load_siglip`): LLaVA-Video's
  copy of the tower has neither the head nor the text tower.
- ``llm_embedding``: the projected visual tokens themselves (the ``visual_features`` CDPruner already
  takes, (N, d_llm)) and `llm_text_embeds`: the question's rows of the LLM's input-embedding table.
  Needs nothing beyond LLaVA-Video.

Adaptations of the official CLIP code, and why:

- Pooled features (``siglip_head``): the image side takes the 2×2-average-pooled pre-post_layernorm
  features (169 per frame), so each embedding belongs to one token the LLM sees, as in the official
  (one CLIP embedding per LLaVA-1.5 token). LLaVA-Video pools after its projector instead; the projector
  and the head are both nonlinear, so neither order gives exactly what the LLM's pooled token encodes.
- Head per token (``siglip_head``): the head attends from a learned probe over a sequence; given a
  length-1 sequence the softmax over its single key is 1, so each token's output is out_proj(v_proj(x))
  plus the head's MLP residual: a fixed per-token map into the image-text space, the analogue of CLIP's
  per-token ``visual_projection``. On the whole sequence the head returns one vector per frame.
- Layer (``siglip_head``): the head was trained on post_layernorm(layer 27 output); it gets layer 26's,
  the last one LLaVA-Video keeps, as the official feeds CLIP's layer −2 to a projection trained on the
  last layer's CLS token. The post_layernorm and head are the standalone checkpoint's; LLaVA-Video's
  tower was fine-tuned with the LLM (the OneVision recipe; not checked on the checkpoint), so its
  features have drifted from those the head was trained on by an unknown amount.
- Chunk length and padding (``siglip_head``): one tokenisation of the question (SigLIP's tokenizer ends
  it with EOS), cut into pieces of the text tower's ``max_position_embeddings`` (64 for SigLIP; the
  official cuts at CLIP's 77), so only the last piece holds EOS. SigLIP was trained on text padded to
  64 with the pad token (transformers' docs insist on ``padding="max_length"``) and no attention mask
  (big_vision's text tower takes none; not checked against its code here), and pools the LAST position
  (transformers' ``SiglipTextModel``: ``last_hidden_state[:, -1]`` then its ``head``), so every piece is
  padded to exactly 64 with ``pad_token_id`` and run without a mask (the official pads CLIP with id 0
  and a zero mask, which CLIP's causal EOS pooling ignores; here the padding changes the result).
- Question tokens (``llm_embedding``): the question tokenised alone without special tokens; at a word
  boundary this can differ from its tokenisation inside the prompt.
- dtype: the features are cast to the SigLIP model's dtype (`load_siglip` gives float32, as the
  official runs CLIP's projections); `query_relevance` computes in float32.
- Negation: `query_relevance` / `cdpruner_select` take ``negate``; the official negates (``True``).

Recommended defaults (``DEFAULT_NEGATE``), neither checked on the real models here (no weights):

- ``siglip_head``: ``negate=False``. The authors negate because, with LLaVA's CLIP, the tokens most
  similar to the text were not the relevant ones, and say they have seen it only in CLIP (issue #14 of
  their repository). The head on one token is the value path of an attention pool applied per location,
  MaskCLIP's (Zhou et al., ECCV 2022) construction, which gives correctly signed dense maps on CLIP's
  attention-pooled ResNets; TextRegion (avaxiao/TextRegion, ``TextRegionSegmenter.py``) pools the
  attention part of SigLIP2's head over token subsets and matches them to text by the plain, un-negated
  logit (but it feeds the last block's value path, not the residual stream used here). Risk: the tokens
  here are, as in CLIP, residual-stream outputs of many query-key attention layers, which is where CLIP's
  inverted patch-text similarity (CLIP Surgery, Li et al. 2023) is traced to. Settle the sign on a dev
  slice before the table (both signs, a small budget).
- ``llm_embedding``: ``negate=False``. Nothing in this space is CLIP's, and the projector is trained for
  the LLM to read visual tokens next to word embeddings, so no inversion is expected. It is the weaker
  signal: projected visual tokens sit far from the word embeddings (larger norms, a modality gap) and
  word embeddings share a common direction, so the mean cosine may mostly rank tokens along that
  direction rather than by the question. Hence ``siglip_head`` is the recommended option, and
  ``llm_embedding`` the fallback without the SigLIP checkpoint.

It cannot tell whether the head's space still fits LLaVA-Video's fine-tuned features: the relevance is
only as good as that fit.
"""

from __future__ import annotations

import torch
from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

RELEVANCE_OPTIONS = ("siglip_head", "llm_embedding")
DEFAULT_NEGATE = {"siglip_head": False, "llm_embedding": False}  # reasons in the module docstring


def siglip_image_embeds(siglip: SiglipModel, features: torch.Tensor) -> torch.Tensor:
    """SigLIP image-text-space embeddings (N, D) of (N, C) pre-post_layernorm features: the model's
    post_layernorm, then its attention-pooling head on each token as a length-1 sequence."""
    vision = siglip.vision_model
    normed = vision.post_layernorm(features.to(vision.post_layernorm.weight.dtype))
    return vision.head(normed[:, None, :])


def siglip_text_embeds(siglip: SiglipModel, tokenizer, text: str) -> torch.Tensor:
    """SigLIP text embeddings (pieces, D) of ``text``: one tokenisation cut into pieces of the text
    tower's ``max_position_embeddings`` (64), each padded to that length with ``pad_token_id`` and
    no attention mask (as SigLIP was trained), each piece's pooled (last-position) output."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the SigLIP tokenizer has no pad token: SigLIP's text tower needs max-length padding")
    chunk = siglip.config.text_config.max_position_embeddings
    ids = tokenizer(text).input_ids
    ids = ids + [tokenizer.pad_token_id] * (-len(ids) % chunk)
    pieces = torch.tensor(ids, device=siglip.text_model.head.weight.device).view(-1, chunk)
    return siglip.text_model(input_ids=pieces).pooler_output


def llm_text_embeds(embed_tokens: torch.nn.Embedding, tokenizer, text: str) -> torch.Tensor:
    """The question's LLM input embeddings (M, d_llm): ``text`` tokenised alone, no special tokens."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return embed_tokens(torch.tensor(ids, device=embed_tokens.weight.device))


def build_siglip_text_and_head(vision_hidden: int, tokenizer, text: dict, head: dict) -> SiglipModel:
    """A random SigLIP for CDPruner's relevance: a text tower (``text``: hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads) over ``tokenizer``'s vocabulary with 64 positions, projecting
    to ``vision_hidden``, and a vision post_layernorm + attention-pooling head taking ``vision_hidden``
    features (``head``: intermediate_size, num_attention_heads) on a 1-layer vision stub."""
    text_config = SiglipTextConfig(
        vocab_size=len(tokenizer),
        **text,
        max_position_embeddings=64,
        projection_size=vision_hidden,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=vision_hidden, **head, num_hidden_layers=1, image_size=28, patch_size=14
    )
    return SiglipModel(SiglipConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict()))


def build_tiny_siglip(vision_hidden: int, tokenizer, seed: int) -> SiglipModel:
    """A seeded random tiny SigLIP (`build_siglip_text_and_head`) for tests and the demo. The global
    RNG state is restored afterwards."""
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    head = dict(intermediate_size=64, num_attention_heads=1)  # one head divides any vision_hidden
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build_siglip_text_and_head(vision_hidden, tokenizer, text, head)
    finally:
        torch.random.set_rng_state(state)


def load_siglip(cfg: dict) -> tuple[SiglipModel, object]:
    """The SigLIP model (float32) and tokenizer at ``cfg['path']`` (a directory or a cached Hub id);
    raises ModelUnavailableError at once when it is not on disk and ``cfg['download']`` is not set."""
    from evoprune.harness.models.loading import load_pruner_weights

    return load_pruner_weights(cfg, "siglip", "SigLIP", SiglipModel)
