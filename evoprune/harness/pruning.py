"""The pruning hook the inference pipeline calls, and the registry that builds one from config.

A pruner may act at two points: `attach`/`detach` patch the model (in-encoder methods such as
EvoPrune), and `select` picks which visual tokens the LLM receives after the encoder (post-encoder
methods). The base class does neither: it is the native, unpruned model (``pruner=none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VisualTokens:
    """What the encoder produced for one image: selected-layer features and their projection."""

    features: torch.Tensor  # (tokens, vision_hidden) from the configured feature layer
    projected: torch.Tensor  # (tokens, llm_hidden) after the multimodal projector
    prompt: str  # the question text, for query-aware methods


class Pruner:
    """Keeps every visual token. Subclasses override `attach`/`detach` and/or `select`."""

    name = "none"

    def __init__(self, budget: int | None):
        self.budget = budget

    def attach(self, model) -> None:
        """Patch ``model`` before inference (no-op here)."""

    def detach(self, model) -> None:
        """Undo `attach` (no-op here)."""

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        """Indices of the tokens to keep, ascending; None keeps all."""
        return None


PRUNERS: dict[str, type[Pruner]] = {"none": Pruner}


def build_pruner(pruner_cfg, budget: int | None) -> Pruner:
    """The pruner named by ``pruner_cfg.name``, configured with the top-level ``budget``."""
    name = pruner_cfg["name"]
    if name not in PRUNERS:
        raise ValueError(f"pruner.name={name!r} is not one of: {', '.join(sorted(PRUNERS))}")
    return PRUNERS[name](budget)
