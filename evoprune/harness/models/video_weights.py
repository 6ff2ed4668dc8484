"""Load LLaVA-Video-7B-Qwen2 into transformers' `LlavaOnevisionForConditionalGeneration`.

Two checkpoint layouts, told apart by `is_original_layout`:
- the original LLaVA-NeXT one (``lmms-lab/LLaVA-Video-7B-Qwen2``: ``LlavaQwenForCausalLM``, model_type
  ``llava_qwen``, sharded ``*.safetensors``). Keys are renamed by `original_to_hf_key`; the config is
  built by `onevision_config_from_original`, the SigLIP tower's shape coming from the caller's
  ``vision`` mapping because the original config.json names the tower only by its Hub id.
- an HF-format conversion (model_type ``llava_onevision``), read by ``from_pretrained``.

Both loads are strict: a checkpoint key with no place in the model, a model weight the checkpoint
lacks, or a shape mismatch raises `ValueError` naming the keys; nothing is left randomly initialised.
A directory without config.json or weights raises `FileNotFoundError` (an `OSError`, which the model
loader reports as `ModelUnavailableError`).

Cannot: read pickled ``*.bin`` checkpoints, rope scaling, or any projector but ``mlp2x_gelu``; stream
weights (every original shard is read into CPU memory first, about 16 GB for the 7B in bfloat16). The
anyres settings of the config are transformers' OneVision defaults (``anyres_max_9`` over 384-px
grids up to 6x6, the same as LLaVA-Video's); LLaVA-Video's own video layout (average pooling,
one newline per row) is not in this model class; the harness builds it (`evoprune.harness.inference.layout`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig

_TOWER = "model.vision_tower.vision_tower.vision_model."
# Original LLaVA-NeXT key → transformers 5.x key. An entry ending in "." renames a prefix, any other
# entry one key. transformers 5.x flattens SigLIP: no ``vision_model.`` level under ``vision_tower``.
ORIGINAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    (_TOWER, "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.image_newline", "model.image_newline"),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.weight", "lm_head.weight"),
)
# Dropped on purpose: LLaVA-NeXT loads the 27-layer SigLIP so400m, then deletes its last layer and
# replaces the attention-pooling head by Identity (siglip_encoder.py, SigLipVisionTower.load_model), so
# these weights, if a checkpoint still carries them, are never used.
DROPPED_PREFIXES = (_TOWER + "head.", _TOWER + "encoder.layers.26.")

ORIGINAL_ARCHITECTURE = "LlavaQwenForCausalLM"
ORIGINAL_MODEL_TYPE = "llava_qwen"
HF_MODEL_TYPE = "llava_onevision"
PROJECTOR_TYPE = "mlp2x_gelu"
_INDEX = "model.safetensors.index.json"
_QWEN2_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
)
_QWEN2_OPTIONAL = (
    "hidden_act",
    "tie_word_embeddings",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
)


def original_to_hf_key(key: str) -> str | None:
    """The transformers name of an original checkpoint key; None for a deliberately dropped one.

    Raises `ValueError` naming a key that is neither mapped nor dropped.
    """
    if key.startswith(DROPPED_PREFIXES):
        return None
    for source, target in ORIGINAL_KEY_MAP:
        if key == source or (source.endswith(".") and key.startswith(source)):
            return target + key[len(source) :]
    raise ValueError(f"unknown key in an original LLaVA-NeXT checkpoint: {key!r}")


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}")
    return json.loads(path.read_text())


def _shard_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files: those of the index if there is one, else every one present."""
    index = directory / _INDEX
    if not index.is_file():
        return sorted(directory.glob("*.safetensors"))
    shards = [directory / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    absent = [str(shard) for shard in shards if not shard.is_file()]
    if absent:
        raise FileNotFoundError(f"{index} lists shards that are not there: {', '.join(absent)}")
    return shards


def is_original_layout(directory: str | Path) -> bool:
    """True for an original LLaVA-NeXT checkpoint: its config.json says so, or its keys have an mm_projector."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        if config.get("model_type") == ORIGINAL_MODEL_TYPE or ORIGINAL_ARCHITECTURE in config.get("architectures", []):
            return True
    for shard in _shard_files(directory):
        with safe_open(shard, framework="pt") as handle:
            if any(key.startswith("model.mm_projector.") for key in handle.keys()):
                return True
    return False


def _check_image_token(image_token_id: int, vocab_size: int) -> None:
    if not 0 <= image_token_id < vocab_size:
        raise ValueError(
            f"image token id {image_token_id} has no row in the {vocab_size}-row embedding; the <image> "
            f"token must be added to a tokenizer whose vocabulary is smaller than the model's"
        )


def onevision_config_from_original(original: dict, vision: dict, image_token_id: int) -> LlavaOnevisionConfig:
    """The OneVision config of an original LLaVA-Video checkpoint.

    ``original``: its config.json (Qwen2 fields plus LLaVA's ``mm_*``). ``vision``: SiglipVisionConfig
    fields of the tower (so400m: hidden 1152, intermediate 4304, 16 heads, 26 layers, 384 px, patch 14).
    Features are the last encoder layer's output, all tokens, as LLaVA-NeXT's SigLIP tower returns them.
    """
    projector = original.get("mm_projector_type")
    if projector != PROJECTOR_TYPE:
        raise ValueError(f"mm_projector_type={projector!r}: only {PROJECTOR_TYPE!r} is supported")
    tower = original.get("mm_vision_tower")
    if not isinstance(tower, str) or "siglip" not in tower.lower() or "so400m" not in tower.lower():
        raise ValueError(f"mm_vision_tower={tower!r}: only a SigLIP so400m tower is supported")
    if original.get("rope_scaling") is not None:
        raise ValueError(f"rope_scaling={original['rope_scaling']!r}: rope scaling is not supported")
    absent = [field for field in (*_QWEN2_REQUIRED, "rope_theta") if field not in original]
    if absent:
        raise ValueError(f"the original config.json lacks Qwen2 field(s): {', '.join(absent)}")
    text_config = Qwen2Config(
        **{field: original[field] for field in _QWEN2_REQUIRED},
        **{field: original[field] for field in _QWEN2_OPTIONAL if field in original},
        rope_parameters={"rope_type": "default", "rope_theta": float(original["rope_theta"])},
    )
    _check_image_token(image_token_id, text_config.vocab_size)
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**vision, vision_use_head=False),
        text_config=text_config,
        image_token_index=image_token_id,
        video_token_index=image_token_id,  # never used: the harness places every visual token itself
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=text_config.tie_word_embeddings,
    )


def _read_original_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every shard's tensors under transformers' names, dropped keys left out."""
    shards = _shard_files(directory)
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in {directory}")
    weights: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for shard in shards:
        for key, tensor in load_file(shard).items():
            try:
                target = original_to_hf_key(key)
            except ValueError:
                unknown.append(key)
                continue
            if target is None:
                continue
            if target in weights:
                raise ValueError(f"{directory}: {target!r} is stored twice (second time as {key!r} in {shard.name})")
            weights[target] = tensor
    if unknown:
        raise ValueError(f"{directory}: unknown original checkpoint key(s): {', '.join(sorted(unknown))}")
    return weights


def _check_weights(config: LlavaOnevisionConfig, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """Raise `ValueError` naming every missing, unexpected or wrongly shaped weight."""
    with torch.device("meta"):
        expected = LlavaOnevisionForConditionalGeneration(config).state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight")
    problems = [f"missing: {key}" for key in sorted(expected.keys() - weights.keys())]
    problems += [f"unexpected: {key}" for key in sorted(weights.keys() - expected.keys())]
    problems += [
        f"shape of {key}: checkpoint {tuple(weights[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(expected.keys() & weights.keys())
        if weights[key].shape != expected[key].shape
    ]
    if problems:
        raise ValueError(f"{directory} does not fit the model:\n  " + "\n  ".join(problems))


def _require_clean(info: dict, directory: Path) -> None:
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    problems = {name: sorted(map(str, values)) for name, values in problems.items() if values}
    if problems:
        raise ValueError(f"{directory} did not load cleanly: {problems}")


def _load_original(directory: Path, vision: dict, image_token_id: int, dtype: torch.dtype):
    config = onevision_config_from_original(_read_config(directory), vision, image_token_id)
    weights = _read_original_weights(directory)
    # As transformers' convert_llava_onevision_weights_to_hf.py: no lm_head means it is embed_tokens
    # (tied here, not cloned); a stored lm_head is loaded as is, whatever tie_word_embeddings said.
    tied = "lm_head.weight" not in weights
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = tied
    _check_weights(config, weights, directory)
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=weights, dtype=dtype, output_loading_info=True
    )
    _require_clean(info, directory)
    return model


def _load_hf_format(directory: Path, vision: dict, image_token_id: int, dtype: torch.dtype):
    config = LlavaOnevisionConfig.from_pretrained(directory)
    tower = config.vision_config
    wanted = {**vision, "vision_use_head": False}
    wrong = [
        f"{name}={getattr(tower, name, None)!r} (want {value!r})"
        for name, value in wanted.items()
        if getattr(tower, name, None) != value
    ]
    if wrong:
        raise ValueError(f"{directory}: the vision tower is not the configured one: {', '.join(wrong)}")
    if config.image_token_id != image_token_id:
        raise ValueError(
            f"{directory}: the model's image token id is {config.image_token_id}, the tokenizer's {image_token_id}"
        )
    _check_image_token(image_token_id, config.text_config.vocab_size)
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        directory, config=config, dtype=dtype, output_loading_info=True
    )
    _require_clean(info, directory)
    return model


def load_llava_video(
    directory: str | Path, vision: dict, image_token_id: int, dtype: torch.dtype
) -> LlavaOnevisionForConditionalGeneration:
    """LLaVA-Video from an original or an HF-format checkpoint directory, in ``dtype`` and eval mode.

    ``vision``: the SigLIP tower's SiglipVisionConfig fields (see `onevision_config_from_original`);
    an HF-format checkpoint must have exactly that tower, without a pooling head.
    """
    directory = Path(directory)
    model_type = _read_config(directory).get("model_type")
    if is_original_layout(directory):
        model = _load_original(directory, vision, image_token_id, dtype)
    elif model_type == HF_MODEL_TYPE:
        model = _load_hf_format(directory, vision, image_token_id, dtype)
    else:
        raise ValueError(
            f"{directory}: model_type {model_type!r} is neither {ORIGINAL_MODEL_TYPE!r} (original LLaVA-NeXT) "
            f"nor {HF_MODEL_TYPE!r} (HF format)"
        )
    return model.eval()
