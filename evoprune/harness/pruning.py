"""The pruning hook the inference pipeline calls, and the registry that builds one from config.

A pruner may act at three points: `attach`/`detach` patch the model (in-encoder methods such as
EvoPrune), `select` picks which visual tokens the LLM receives after the encoder (post-encoder
methods; timed as the ``pruning`` stage), and `prefill` runs the LLM over the prompt (methods that
prune inside the LLM, such as DART; timed as ``prefill``). The base class does none of it: it is
the native, unpruned model (``pruner=none``).

A sample carries F frames (F = 1 for an image). ``budget`` counts tokens per frame: post-encoder
pruners select ``budget`` of each frame's tokens on the grid the LLM receives (576 for LLaVA-1.5,
the pooled 169 for LLaVA-Video), in-encoder pruners (``in_encoder = True``) leave ``budget`` of the
tower's patch tokens per frame (576, 729), LLM-side pruners keep F x budget of the visual tokens.
Newline embeddings are laid out after selection and are never candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoprune.harness.layout import pool_grid
from evoprune.harness.settings import ConfigError


@dataclass
class VisualTokens:
    """What the encoder produced for one sample's F frames.

    ``projected`` is on the grid the LLM receives (pooled when the model pools); ``features`` and
    ``layer_input`` are the tower's own tokens, unpooled: `to_llm_grid` maps a per-token signal
    onto the LLM's grid the way the model pools its tokens.
    """

    features: torch.Tensor  # (F, N, vision_hidden) feature-layer patch tokens ([CLS] removed)
    projected: torch.Tensor  # (F, S, llm_hidden) after the projector (and pooling): the selection candidates
    prompt: str  # the question text, for query-aware methods
    layer_input: torch.Tensor  # (F, cls + N, vision_hidden): input of the layer that produces the features
    vision_tower: torch.nn.Module
    feature_layer: int
    cls_tokens: int  # [CLS] tokens at the front of layer_input (1 CLIP, 0 SigLIP)
    pool_stride: int | None  # the model's pooling of the N tower tokens onto the S grid
    embed_tokens: torch.nn.Module  # the LLM's input embedding table
    tokenizer: object  # the LLM's tokenizer

    @property
    def frames(self) -> int:
        return self.projected.shape[0]

    def to_llm_grid(self, per_token: torch.Tensor) -> torch.Tensor:
        """(F, N, ...) or (F, N) values on the tower's tokens → the S positions the LLM receives."""
        if per_token.ndim == 2:
            return pool_grid(per_token[..., None], self.pool_stride)[..., 0]
        return pool_grid(per_token, self.pool_stride)


class Pruner:
    """Keeps every visual token. Subclasses override `attach`/`detach` and/or `select`."""

    name = "none"
    in_encoder = False  # True: budget counts the tower's patch tokens per frame (before any pooling)

    def __init__(self, budget: int | None):
        self.budget = budget

    def attach(self, model) -> None:
        """Patch ``model`` before inference (no-op here)."""

    def detach(self, model) -> None:
        """Undo `attach` (no-op here)."""

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        """(F, k) indices of each frame's tokens to keep (into ``projected``'s S), ascending; None keeps all."""
        return None

    def prefill(self, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, frames: int = 1):
        """Run the LLM over the prompt with a KV cache: (model output, visual tokens it kept).

        ``inputs_embeds`` (1, L, hidden); ``image_mask`` (L,) marks the prunable visual positions of
        the sample's ``frames`` frames (newlines are not marked).
        """
        return language_model(inputs_embeds=inputs_embeds, use_cache=True), int(image_mask.sum())


def pruner_class(method: str) -> type[Pruner]:
    """The class that implements ``pruner.method``; ConfigError naming the accepted ones."""
    pruners = _registry()
    if method not in pruners:
        raise ConfigError(f"pruner.method={method!r} is not one of: {', '.join(sorted(pruners))}")
    return pruners[method]


def _registry() -> dict[str, type[Pruner]]:
    from baselines.pruners import CDPrunerPruner, DARTPruner, DivPrunePruner, FasterVLMPruner, VisPrunerPruner
    from evoprune.harness.evoprune_pruner import EvoPrunePruner

    pruners = (Pruner, EvoPrunePruner, FasterVLMPruner, VisPrunerPruner, DARTPruner, DivPrunePruner, CDPrunerPruner)
    return {pruner.name: pruner for pruner in pruners}


def build_pruner(pruner_cfg, budget: int | None) -> Pruner:
    """The pruner for ``pruner_cfg.method`` with the config's other fields as options.

    ``pruner_cfg.name`` labels the run (presets share a method); it is not passed on.
    """
    cls = pruner_class(pruner_cfg["method"])
    options = {key: value for key, value in dict(pruner_cfg).items() if key not in ("name", "method")}
    try:
        return cls(budget, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner {pruner_cfg['name']!r}: {err}") from err


def locate_pruner_weights(pruner_cfg) -> None:
    """Raise `ModelUnavailableError` at once when the pruner needs weights that are not on disk.

    Today only CDPruner has any: the full CLIP named by ``pruner.clip`` or the full SigLIP named by
    ``pruner.siglip`` (``kind: hf``; SigLIP unless ``relevance: llm_embedding``).
    """
    from evoprune.harness.models import local_snapshot, missing_pruner_weights

    for field, what in (("clip", "CLIP"), ("siglip", "SigLIP")):
        weights = pruner_cfg.get(field)
        if not weights or weights.get("kind") != "hf" or weights.get("download", False):
            continue
        if field == "siglip" and pruner_cfg.get("relevance") == "llm_embedding":
            continue
        if local_snapshot(weights["path"]) is None:
            raise missing_pruner_weights(pruner_cfg["name"], field, what, weights["path"])
