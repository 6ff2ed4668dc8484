"""Harness glue for the five baselines: extract each method's signals, call its selection.

Post-encoder methods (FasterVLM, VisPruner, DivPrune, CDPruner) implement `select`, timed as the
``pruning`` stage together with the signals they need beyond the normal forward (the CLS
attention row recomputed from the tower's hidden states; CDPruner's CLIP text tower and
projections). DART prunes inside the LLM and implements `prefill`, timed as ``prefill``.
``budget: null`` keeps every token for each of them.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from baselines.cdpruner import cdpruner_select
from baselines.dart import check_options
from baselines.dart_prefill import dart_prefill
from baselines.divprune import divprune_select
from baselines.fastervlm import fastervlm_select
from baselines.signals import clip_image_embeds, clip_text_embeds, cls_attention
from baselines.vispruner import vispruner_select
from evoprune.harness.pruning import Pruner, VisualTokens


def _head_mean_cls_attention(tokens: VisualTokens) -> torch.Tensor:
    """CLS-row attention over the patch tokens of the feature layer, averaged over heads: (N,)."""
    return cls_attention(tokens.vision_tower, tokens.hidden_states, tokens.feature_layer)[0].mean(0)


class FasterVLMPruner(Pruner):
    name = "fastervlm"

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return fastervlm_select(_head_mean_cls_attention(tokens), self.budget)


class VisPrunerPruner(Pruner):
    name = "vispruner"

    def __init__(self, budget: int | None, important_ratio: float = 0.5):
        super().__init__(budget)
        if not 0.0 <= important_ratio <= 1.0:
            raise ValueError(f"important_ratio={important_ratio!r} must be in [0, 1]")
        self.important_ratio = important_ratio

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return vispruner_select(_head_mean_cls_attention(tokens), tokens.features, self.budget, self.important_ratio)


class DivPrunePruner(Pruner):
    name = "divprune"

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        return divprune_select(tokens.projected, self.budget)


class DARTPruner(Pruner):
    name = "dart"

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

    def prefill(self, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor):
        if self.budget is None:
            return super().prefill(language_model, inputs_embeds, image_mask)
        return dart_prefill(
            language_model,
            inputs_embeds,
            image_mask,
            self.budget,
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
    """Needs the full CLIP of the vision tower (text tower + both projections): ``clip.kind``
    ``hf`` with ``clip.path`` (LLaVA-1.5: openai/clip-vit-large-patch14-336), or ``tiny``."""

    name = "cdpruner"

    def __init__(self, budget: int | None, clip=None, strip_instructions=()):
        super().__init__(budget)
        if not clip or clip.get("kind") not in ("hf", "tiny"):
            raise ValueError(
                "CDPruner needs the CLIP text tower and projections of the vision tower: set pruner.clip.kind=hf "
                "and pruner.clip.path=openai/clip-vit-large-patch14-336 (a local copy or a cached Hub id), "
                "or pruner.clip.kind=tiny for the tiny random model"
            )
        self.clip_cfg = dict(clip)
        self.strip_instructions = tuple(strip_instructions)
        self.clip = self.tokenizer = None

    def attach(self, model) -> None:
        device = model.device
        if self.clip_cfg["kind"] == "tiny":
            from evoprune.harness.models import build_byte_tokenizer

            self.tokenizer = build_byte_tokenizer()
            vision_hidden = model.config.vision_config.hidden_size
            self.clip = build_tiny_clip(vision_hidden, self.tokenizer, seed=self.clip_cfg.get("seed", 0))
        else:
            self.clip, self.tokenizer = _load_clip(self.clip_cfg)
        self.clip = self.clip.to(device, torch.float32).eval()

    def detach(self, model) -> None:
        self.clip = self.tokenizer = None

    def question(self, prompt: str) -> str:
        """The raw question: the prompt without the benchmark's answer-format instruction."""
        for instruction in self.strip_instructions:
            prompt = prompt.replace(instruction, "")
        return prompt.strip()

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        if self.budget is None:
            return None
        patches = tokens.hidden_states[tokens.feature_layer][0, 1:]
        image_embeds = clip_image_embeds(self.clip, tokens.vision_tower.post_layernorm, patches)
        text_embeds = clip_text_embeds(self.clip, self.tokenizer, self.question(tokens.prompt))
        return cdpruner_select(tokens.projected, image_embeds, text_embeds, self.budget)


def _load_clip(clip_cfg):
    from transformers import AutoTokenizer

    from evoprune.harness.models import ModelUnavailableError, local_snapshot

    source = local_snapshot(clip_cfg["path"])
    if source is None and not clip_cfg.get("download", False):
        raise ModelUnavailableError(
            f"CDPruner's CLIP {clip_cfg['path']!r} is not on disk: download it where the Hub is reachable and set "
            f"pruner.clip.path=/local/dir, or pruner.clip.download=true on a machine with Hub access"
        )
    source = source or clip_cfg["path"]
    return CLIPModel.from_pretrained(source, dtype=torch.float32), AutoTokenizer.from_pretrained(source)
