"""Harness glue for the five baselines: extract each method's signals, call its selection per frame.

Post-encoder methods (FasterVLM, VisPruner, DivPrune, CDPruner) implement `select`, timed as the
``pruning`` stage together with the signals they need beyond the normal forward (the CLS
attention row recomputed from the tower's hidden states; CDPruner's CLIP text tower and
projections). DART prunes inside the LLM and implements `prefill`, timed as ``prefill``.
``budget: null`` keeps every token for each of them.

Video (LLaVA-Video: SigLIP, no [CLS], 2x2 average pooling to 13x13 = 169 tokens per frame): each
method selects ``budget`` tokens of every frame with the same selection function as for an image,
on the pooled grid the LLM receives (none of the official repositories runs these methods on
LLaVA-Video). Adaptations:
- [CLS] attention (FasterVLM, VisPruner's important tokens) has no [CLS] to read: the score is the
  attention each token receives (mean over queries and heads) in the layer that produces the
  features (the last of SigLIP's 26 layers, as FasterVLM reads the feature layer), 2x2-averaged onto
  the 169 grid like the tokens themselves (VisPruner's own SigLIP branch and HoliTom's VisionZip
  port score by attention received, mean over queries and heads).
- VisPruner's diverse tokens use the feature-layer features 2x2-averaged onto the same grid.
- DivPrune and CDPruner's similarity read the pooled projected tokens (what reaches the LLM).
- CDPruner's relevance: see `CDPrunerPruner`.
- DART: see `DARTPruner`.

Baselines the paper left out: VisionZip and spatial pooling build new tokens from the tower's
features in `reduce` (before the projector: ``baselines.visionzip``, ``baselines.pooling``); random
selection picks among the same candidates as the post-encoder methods (``baselines.random_selection``);
ToMe merges inside the encoder (``baselines.tome``).
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

from baselines.cdpruner import cdpruner_select
from baselines.dart import check_options
from baselines.dart_prefill import dart_prefill
from baselines.divprune import divprune_select
from baselines.fastervlm import fastervlm_select
from baselines.pooling import nearest_square_side, pool_patch_grid
from baselines.random_selection import random_select, sample_seed
from baselines.siglip_relevance import (
    DEFAULT_NEGATE,
    RELEVANCE_OPTIONS,
    build_tiny_siglip,
    llm_text_embeds,
    load_siglip,
    siglip_image_embeds,
    siglip_text_embeds,
)
from baselines.signals import (
    clip_image_embeds,
    clip_text_embeds,
    cls_attention,
    feature_layer_keys,
    received_attention,
)
from baselines.visionzip import contextual_count, visionzip_tokens
from baselines.vispruner import vispruner_select
from evoprune.harness.inference.pruning import Pruner, VisualTokens


def tower_attention_scores(tokens: VisualTokens) -> torch.Tensor:
    """(F, N) importance on the tower's patch tokens, averaged over heads: the [CLS] row of the
    feature layer (CLIP), or the attention each token receives there (SigLIP)."""
    if tokens.cls_tokens:
        scores = cls_attention(tokens.vision_tower, tokens.layer_input, tokens.feature_layer)
    else:
        scores = received_attention(tokens.vision_tower, tokens.layer_input, tokens.feature_layer)
    return scores.mean(dim=1)


def attention_scores(tokens: VisualTokens) -> torch.Tensor:
    """(F, S) `tower_attention_scores` on the LLM's grid, pooled as the tokens are."""
    return tokens.to_llm_grid(tower_attention_scores(tokens))


def per_frame(select, *per_frame_inputs: torch.Tensor) -> torch.Tensor:
    """(F, k) stacked results of ``select`` called on each frame's slice of the inputs."""
    return torch.stack([select(*inputs) for inputs in zip(*per_frame_inputs, strict=True)])


class FasterVLMPruner(Pruner):
    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return per_frame(lambda scores: fastervlm_select(scores, self.budget), attention_scores(tokens))


class VisPrunerPruner(Pruner):
    def __init__(self, budget: int | None, important_ratio: float = 0.5):
        super().__init__(budget)
        if not 0.0 <= important_ratio <= 1.0:
            raise ValueError(f"important_ratio={important_ratio!r} must be in [0, 1]")
        self.important_ratio = important_ratio

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        features = tokens.to_llm_grid(tokens.features)
        return per_frame(
            lambda scores, feats: vispruner_select(scores, feats, self.budget, self.important_ratio),
            attention_scores(tokens),
            features,
        )


class DivPrunePruner(Pruner):
    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return per_frame(lambda projected: divprune_select(projected, self.budget), tokens.projected)


class DARTPruner(Pruner):
    """On video DART keeps frames x budget visual tokens chosen over the whole video span with global
    pivots (4 image pivots for the whole span, not per frame), as every DART implementation selects
    over one visual span: its premise is duplication anywhere in the input, and a video's duplicates
    are mostly across frames. Frames therefore keep different numbers of tokens."""

    def __init__(
        self,
        budget: int | None,
        layer: int = 2,
        num_pivots: int = 4,
        num_text_pivots: int = 4,
        pivot_order: str = "official",
        count: str = "exact",
    ):
        super().__init__(budget)
        check_options(pivot_order, count)
        if budget is not None and budget < num_pivots:
            raise ValueError(f"budget={budget} is below DART's num_pivots={num_pivots}: the pivots are always kept")
        self.layer, self.num_pivots, self.num_text_pivots = layer, num_pivots, num_text_pivots
        self.pivot_order, self.count = pivot_order, count

    def prefill(self, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, frames: int = 1):
        if self.budget is None:
            return super().prefill(language_model, inputs_embeds, image_mask, frames)
        return dart_prefill(
            language_model,
            inputs_embeds,
            image_mask,
            self.budget * frames,
            layer=self.layer,
            num_pivots=self.num_pivots,
            num_text_pivots=self.num_text_pivots,
            pivot_order=self.pivot_order,
            count=self.count,
        )


def build_tiny_clip(vision_hidden: int, tokenizer, seed: int) -> CLIPModel:
    """A seeded random CLIP whose visual projection takes ``vision_hidden`` features (tests, demo)."""
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
    finally:
        torch.random.set_rng_state(state)


class CDPrunerPruner(Pruner):
    """Needs an image-text model for its relevance, chosen by the vision tower at `attach`:

    - CLIP tower (LLaVA-1.5): the full CLIP of the tower (text tower + both projections), ``clip.kind``
      ``hf`` with ``clip.path`` (openai/clip-vit-large-patch14-336), or ``tiny``; negated (official).
    - SigLIP tower (LLaVA-Video): ``relevance`` ``siglip_head`` (SigLIP's head per token vs its text
      tower: ``siglip.kind`` ``hf`` with ``siglip.path`` google/siglip-so400m-patch14-384, or ``tiny``)
      or ``llm_embedding`` (projected tokens vs the question's LLM input embeddings; needs nothing);
      see `baselines.siglip_relevance`, whose ``DEFAULT_NEGATE`` applies when ``negate`` is null.
    """

    def __init__(
        self,
        budget: int | None,
        clip=None,
        siglip=None,
        relevance: str = "siglip_head",
        negate: bool | None = None,
        strip_instructions=(),
    ):
        super().__init__(budget)
        if relevance not in RELEVANCE_OPTIONS:
            raise ValueError(f"relevance={relevance!r} is not one of: {', '.join(RELEVANCE_OPTIONS)}")
        for field, cfg in (("clip", clip), ("siglip", siglip)):
            if cfg and cfg.get("kind") not in ("hf", "tiny"):
                raise ValueError(f"pruner.{field}.kind={cfg.get('kind')!r} is not one of: hf, tiny")
        if not clip and not siglip and relevance != "llm_embedding":
            raise ValueError(
                "CDPruner needs the image-text model of the vision tower: for LLaVA-1.5 set pruner.clip.kind=hf and "
                "pruner.clip.path=openai/clip-vit-large-patch14-336, for LLaVA-Video pruner.siglip.kind=hf and "
                "pruner.siglip.path=google/siglip-so400m-patch14-384 (local copies or cached Hub ids), "
                "pruner.relevance=llm_embedding (SigLIP towers only), or kind=tiny for the tiny random models"
            )
        self.clip_cfg = dict(clip) if clip else None
        self.siglip_cfg = dict(siglip) if siglip else None
        self.relevance, self.negate = relevance, negate
        self.strip_instructions = tuple(strip_instructions)
        self.space = self.text_model = self.tokenizer = self.negate_now = None

    def attach(self, model) -> None:
        vision_hidden = model.config.vision_config.hidden_size
        if isinstance(model.model.vision_tower, CLIPVisionModel):
            if self.clip_cfg is None:
                raise ValueError(
                    "the vision tower is CLIP: CDPruner needs pruner.clip (see configs/pruner/cdpruner.yaml)"
                )
            text_model, tokenizer = self._image_text_model(self.clip_cfg, build_tiny_clip, _load_clip, vision_hidden)
            self.use_image_text_model("clip", text_model.to(model.device), tokenizer)
        elif self.relevance == "siglip_head":
            if self.siglip_cfg is None:
                raise ValueError(
                    "the vision tower is SigLIP: CDPruner's relevance=siglip_head needs pruner.siglip, "
                    "or set pruner.relevance=llm_embedding"
                )
            text_model, tokenizer = self._image_text_model(
                self.siglip_cfg, build_tiny_siglip, load_siglip, vision_hidden
            )
            self.use_image_text_model("siglip_head", text_model.to(model.device), tokenizer)
        else:
            self.use_image_text_model("llm_embedding")

    def use_image_text_model(self, space: str, text_model=None, tokenizer=None) -> None:
        """Score relevance in ``space`` (clip, siglip_head, llm_embedding) with this model (float32, eval)
        and its tokenizer; `attach` calls it with the configured ones."""
        self.space, self.tokenizer = space, tokenizer
        self.text_model = None if text_model is None else text_model.to(torch.float32).eval()
        default = True if space == "clip" else DEFAULT_NEGATE[space]  # CLIP: the official negation
        self.negate_now = default if self.negate is None else self.negate

    @staticmethod
    def _image_text_model(cfg, build_tiny, load, vision_hidden: int):
        if cfg["kind"] == "tiny":
            from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer

            tokenizer = build_byte_tokenizer()
            return build_tiny(vision_hidden, tokenizer, seed=cfg.get("seed", 0)), tokenizer
        return load(cfg)

    def detach(self, model) -> None:
        self.space = self.text_model = self.tokenizer = self.negate_now = None

    def question(self, prompt: str) -> str:
        """The raw question: the prompt without the benchmark's answer-format instruction."""
        for instruction in self.strip_instructions:
            prompt = prompt.replace(instruction, "")
        return prompt.strip()

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        question = self.question(tokens.prompt)
        if self.space == "clip":
            text_embeds = clip_text_embeds(self.text_model, self.tokenizer, question)
            image_embeds = clip_image_embeds(self.text_model, tokens.vision_tower.post_layernorm, tokens.features)
        elif self.space == "siglip_head":
            text_embeds = siglip_text_embeds(self.text_model, self.tokenizer, question)
            pooled = tokens.to_llm_grid(tokens.features)
            image_embeds = siglip_image_embeds(self.text_model, pooled.flatten(0, 1)).view(*pooled.shape[:2], -1)
        else:
            text_embeds = llm_text_embeds(tokens.embed_tokens, tokens.tokenizer, question)
            image_embeds = tokens.projected

        def select(projected, embeds):
            return cdpruner_select(projected, embeds, text_embeds, self.budget, negate=self.negate_now)

        return per_frame(select, tokens.projected, image_embeds)


def _load_clip(clip_cfg):
    from evoprune.harness.models.loading import load_pruner_weights

    return load_pruner_weights(clip_cfg, "clip", "CLIP", CLIPModel)


class VisionZipPruner(Pruner):
    """VisionZip's dominant + contextual tokens per frame (`baselines.visionzip`), in `reduce`.

    ``budget`` counts the tokens each frame hands the projector ([CLS] included on CLIP when
    ``keep_cls``, as the official code); a budget of the tower's patch count or more keeps the tower's
    tokens unchanged (native).
    """

    in_encoder = True

    def __init__(self, budget: int | None, contextual_ratio: float = 10 / 64, keep_cls: bool = True):
        super().__init__(budget)
        if not 0.0 <= contextual_ratio <= 1.0:
            raise ValueError(f"contextual_ratio={contextual_ratio!r} must be in [0, 1]")
        self.contextual_ratio, self.keep_cls = contextual_ratio, keep_cls

    def reduce(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None or self.budget >= tokens.features.shape[1]:
            return None
        prefix = tokens.cls_features if self.keep_cls else tokens.features[:, :0]
        contextual = contextual_count(self.budget, prefix.shape[1], self.contextual_ratio)
        dominant = self.budget - prefix.shape[1] - contextual
        keys = feature_layer_keys(tokens.vision_tower, tokens.layer_input, tokens.feature_layer)
        return per_frame(
            lambda patches, cls, scores, metric: visionzip_tokens(patches, cls, scores, metric, dominant, contextual),
            tokens.features,
            prefix,
            tower_attention_scores(tokens),
            keys[:, tokens.cls_tokens :],
        )


class SpatialPoolingPruner(Pruner):
    """Average pooling of each frame's patch grid to the square grid nearest ``budget`` (`baselines.pooling`)."""

    reduced_grid = True

    @property
    def tokens_per_frame(self) -> int | None:
        return None if self.budget is None else nearest_square_side(self.budget) ** 2

    def reduce(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return pool_patch_grid(tokens.features, nearest_square_side(self.budget))


class RandomPruner(Pruner):
    """``budget`` uniformly random candidates per frame, seeded by ``seed`` and the sample's id."""

    def __init__(self, budget: int | None, seed: int = 0):
        super().__init__(budget)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an integer")
        self.seed = seed

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        frames, candidates = tokens.projected.shape[:2]
        keep = random_select(frames, candidates, self.budget, sample_seed(self.seed, tokens.sample_id))
        return keep.to(tokens.projected.device)
