"""Checks on the composed config that must pass before any data or model is loaded."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what it accepts."""


def check_budget(budget, num_visual_tokens: int, pruner_method: str) -> None:
    """``budget`` is null (keep all) or an integer in [1, num_visual_tokens] with a pruner set."""
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ConfigError(
            f"budget={budget!r} is not an integer; use an integer in [1, {num_visual_tokens}] "
            f"or budget=null to keep all {num_visual_tokens} visual tokens"
        )
    if not 1 <= budget <= num_visual_tokens:
        raise ConfigError(
            f"budget={budget} is outside the valid range [1, {num_visual_tokens}] "
            f"(the model has {num_visual_tokens} visual tokens per image; budget=null keeps all)"
        )
    if pruner_method == "none":
        raise ConfigError(
            f"budget={budget} needs a pruner, but pruner=none keeps all {num_visual_tokens} visual tokens; "
            f"pick another pruner (see configs/pruner/) or set budget=null"
        )


def check_limit(limit) -> None:
    """``limit`` is null (all samples) or a positive integer."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit={limit!r} must be a positive integer (samples per task) or null for all samples")


def check_config(cfg) -> None:
    """Every check that needs no model, data or network."""
    check_budget(cfg.budget, cfg.model.num_visual_tokens, cfg.pruner.method)
    check_limit(cfg.limit)
