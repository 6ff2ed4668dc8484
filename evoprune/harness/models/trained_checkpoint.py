"""Checkpoints of the trained tiny models: what is stored, and loading one with every check.

A checkpoint (safetensors, written by ``scripts/train_tiny.py``) holds only what training changed: the
projector, the LLM and its LM head (and LLaVA-Video's newline). The frozen vision tower is rebuilt from
``checkpoint.tower_seed``; the file's metadata records that seed, the ``tiny`` shapes and the tokenizer it
was trained with (a byte-level BPE learned on the training prompts), and a checkpoint whose seed or shapes
differ from its config is refused, naming the mismatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from evoprune.harness.common.errors import ModelUnavailableError
from evoprune.harness.common.paths import REPO_ROOT
from evoprune.harness.common.source import code_version

FORMAT = 1
TRAINED_PARTS = ("model.multi_modal_projector.", "model.language_model.", "lm_head.", "model.image_newline")


class CheckpointError(ModelUnavailableError):
    """A trained checkpoint is missing, unreadable or does not match its model config (exit status 2)."""


def trained_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters a checkpoint holds, by name: the projector, the LLM and the LM head (and LLaVA-Video's
    newline embedding)."""
    return {name: p for name, p in model.named_parameters() if name.startswith(TRAINED_PARTS)}


def _tiny(model_cfg) -> dict:
    tiny = model_cfg["tiny"]
    return OmegaConf.to_container(tiny, resolve=True) if OmegaConf.is_config(tiny) else dict(tiny)


def checkpoint_metadata(model_cfg, **details) -> dict:
    """What a checkpoint records besides its tensors (JSON-able)."""
    return {
        "format": FORMAT,
        "model": model_cfg["name"],
        "tower_seed": model_cfg["checkpoint"]["tower_seed"],
        "tiny": _tiny(model_cfg),
        "code_version": code_version(),
        **details,
    }


def rebuild_command(model_cfg) -> str:
    return f"python scripts/train_tiny.py --model {model_cfg['name']}"


def checkpoint_path(model_cfg) -> Path:
    """The checkpoint file (``checkpoint.path``, relative to the repo root); CheckpointError naming it and
    the command that rebuilds it when it is missing."""
    path = REPO_ROOT / model_cfg["checkpoint"]["path"]
    if not path.is_file():
        raise CheckpointError(f"trained checkpoint {path} is missing; rebuild it with: {rebuild_command(model_cfg)}")
    return path


@dataclass
class StoredCheckpoint:
    """A checkpoint file read and checked against its model config: its metadata and tensors."""

    path: Path
    metadata: dict
    state: dict[str, torch.Tensor]

    def tokenizer(self, qwen_chat: bool = False):
        """The tokenizer trained with the weights (``metadata["tokenizer"]``), or None for the byte-level one;
        ``qwen_chat``: as `tiny_tokenizers.qwen_chat_tokenizer` makes it (LLaVA-Video)."""
        if "tokenizer" not in self.metadata:
            return None
        from tokenizers import Tokenizer

        from evoprune.harness.models.tiny_tokenizers import byte_level_tokenizer, qwen_chat_tokenizer

        backend = Tokenizer.from_str(self.metadata["tokenizer"])
        return qwen_chat_tokenizer(backend) if qwen_chat else byte_level_tokenizer(backend)


def read_checkpoint(model_cfg) -> StoredCheckpoint:
    """``model_cfg.checkpoint``'s file, refused (CheckpointError naming the file, the mismatch and the command
    that rebuilds it) when it is missing, unreadable, or made with another tower seed or ``tiny`` shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = checkpoint_path(model_cfg)
    rebuild = rebuild_command(model_cfg)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"trained checkpoint {path} is unreadable ({err}); rebuild it with: {rebuild}") from err
    expected = {"format": FORMAT, "tower_seed": model_cfg["checkpoint"]["tower_seed"], "tiny": _tiny(model_cfg)}
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise CheckpointError(
                f"trained checkpoint {path} was made with {key}={metadata.get(key)!r}, but model "
                f"{model_cfg['name']!r} has {key}={value!r}; rebuild it with: {rebuild}"
            )
    return StoredCheckpoint(path, metadata, state)


def load_trained(model, model_cfg, stored: StoredCheckpoint) -> dict:
    """Copy ``stored``'s tensors into ``model`` (built from ``checkpoint.tower_seed`` with the checkpoint's
    tokenizer); its metadata. CheckpointError when they do not fit."""
    parameters = trained_parameters(model)
    state = stored.state
    wrong = sorted(set(parameters) ^ set(state)) + sorted(
        name for name in set(parameters) & set(state) if parameters[name].shape != state[name].shape
    )
    if wrong:
        raise CheckpointError(
            f"trained checkpoint {stored.path} does not fit the model ({', '.join(wrong[:5])}); "
            f"rebuild it with: {rebuild_command(model_cfg)}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)
    return stored.metadata
