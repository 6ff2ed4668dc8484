"""Where a model's weights are on disk, and the error naming what to do when they are not: the checks a run
makes before any model code is imported (huggingface_hub only, no torch or transformers)."""

from __future__ import annotations

from pathlib import Path

from evoprune.harness.common.errors import ModelUnavailableError


def local_snapshot(path: str) -> str | None:
    """The on-disk location of ``path``: itself if a directory, else its Hub cache snapshot."""
    if Path(path).is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(path, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError):
        return None


def missing_pruner_weights(pruner: str, field: str, what: str, path: str) -> ModelUnavailableError:
    """The error for a pruner's extra weights (``pruner.<field>``) that are not on disk."""
    return ModelUnavailableError(
        f"pruner {pruner!r} needs the {what} {path!r}, which is not on disk: download it where the Hub is "
        f"reachable and set pruner.{field}.path=/local/dir (or model.{field}.path=…), or "
        f"pruner.{field}.download=true on a machine with Hub access"
    )


def unavailable_model(model_cfg, reason: str) -> ModelUnavailableError:
    """The error for a real model whose weights cannot be read, saying how to get them."""
    return ModelUnavailableError(
        f"Cannot load model {model_cfg['name']!r} from {model_cfg['path']!r}: {reason}\n"
        f"Download the weights on a machine with Hugging Face Hub access "
        f"(`hf download {model_cfg['path']}`) and point the run at them with "
        f"`model.path=/local/dir/with/the/weights` (or set HF_HOME to a cache that holds them); "
        f"on a machine with Hub access, `model.download=true` fetches them."
    )


def locate_weights(model_cfg) -> str | None:
    """Where an ``hf`` model's weights are read from; raises at once when they cannot be had.

    None for ``tiny`` models (built, not read); a tiny model's trained checkpoint must exist.
    """
    if model_cfg["kind"] != "hf":
        if model_cfg.get("checkpoint"):
            from evoprune.harness.models.trained_checkpoint import checkpoint_path

            checkpoint_path(model_cfg)
        return None
    source = local_snapshot(model_cfg["path"])
    if source is not None:
        return source
    if not model_cfg["download"]:
        raise unavailable_model(
            model_cfg, "it is not on disk (neither a directory nor in the HF cache) and model.download=false."
        )
    return model_cfg["path"]
