"""The pruning hook the inference pipeline calls, and the registry that builds one from config.

A pruner may act at three points: `attach`/`detach` patch the model (in-encoder methods such as
EvoPrune), `select` picks which visual tokens the LLM receives after the encoder (post-encoder
methods; timed as the ``pruning`` stage), and `prefill` runs the LLM over the prompt (methods that
prune inside the LLM, such as DART; timed as ``prefill``). The base class does none of it: it is
the native, unpruned model (``pruner=none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoprune.harness.settings import ConfigError


@dataclass
class VisualTokens:
    """What the encoder produced for one image: selected-layer features and their projection."""

    features: torch.Tensor  # (tokens, vision_hidden) from the configured feature layer
    projected: torch.Tensor  # (tokens, llm_hidden) after the multimodal projector
    prompt: str  # the question text, for query-aware methods
    hidden_states: tuple[torch.Tensor, ...]  # the vision tower's (1, tokens + CLS, hidden) per layer
    vision_tower: torch.nn.Module
    feature_layer: int


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

    def prefill(self, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor):
        """Run the LLM over the prompt with a KV cache: (model output, visual tokens it kept).

        ``inputs_embeds`` (1, S, hidden) and ``image_mask`` (S,) marking the visual positions.
        """
        return language_model(inputs_embeds=inputs_embeds, use_cache=True), int(image_mask.sum())


def _registry() -> dict[str, type[Pruner]]:
    from baselines.pruners import CDPrunerPruner, DARTPruner, DivPrunePruner, FasterVLMPruner, VisPrunerPruner
    from evoprune.harness.evoprune_pruner import EvoPrunePruner

    pruners = (Pruner, EvoPrunePruner, FasterVLMPruner, VisPrunerPruner, DARTPruner, DivPrunePruner, CDPrunerPruner)
    return {pruner.name: pruner for pruner in pruners}


def build_pruner(pruner_cfg, budget: int | None) -> Pruner:
    """The pruner for ``pruner_cfg.method`` with the config's other fields as options.

    ``pruner_cfg.name`` labels the run (presets share a method); it is not passed on.
    """
    pruners = _registry()
    method = pruner_cfg["method"]
    if method not in pruners:
        raise ValueError(f"pruner.method={method!r} is not one of: {', '.join(sorted(pruners))}")
    options = {key: value for key, value in dict(pruner_cfg).items() if key not in ("name", "method")}
    try:
        return pruners[method](budget, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner {pruner_cfg['name']!r}: {err}") from err


def locate_pruner_weights(pruner_cfg) -> None:
    """Raise `ModelUnavailableError` at once when the pruner needs weights that are not on disk.

    Today only CDPruner has any: the full CLIP named by ``pruner.clip`` (``kind: hf``).
    """
    from evoprune.harness.models import ModelUnavailableError, local_snapshot

    clip = pruner_cfg.get("clip")
    if not clip or clip.get("kind") != "hf" or clip.get("download", False):
        return
    if local_snapshot(clip["path"]) is None:
        raise ModelUnavailableError(
            f"pruner {pruner_cfg['name']!r} needs the CLIP {clip['path']!r}, which is not on disk: download it "
            f"where the Hub is reachable and set pruner.clip.path=/local/dir (or model.clip.path=…), or "
            f"pruner.clip.download=true on a machine with Hub access"
        )
