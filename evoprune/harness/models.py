"""Load a LLaVA model (`LlavaForConditionalGeneration`) with its tokenizer and image processor.

Two sources, one result type:
- ``kind: hf``: an HF model id or a local directory (e.g. ``llava-hf/llava-1.5-7b-hf``). The
  weights must already be on disk (the directory, or the HF cache) unless ``download: true``; a
  model that is not there, or fails to load, raises `ModelUnavailableError` at once, naming the
  id and the ``model.path=`` override (no slow Hub retries on machines without Hub access).
- ``kind: tiny``: a randomly initialised model built from config, seeded and deterministic, with
  the real CLIP-L/336 token grid (24x24 patches + CLS, 24 layers) and only the widths shrunk, a
  small Llama, and a byte-level tokenizer built locally. Its answers are noise; it exists so the
  whole pipeline runs offline.

Images are always preprocessed by `LlavaImageProcessorPil` (PIL backend: PyPI's torchvision is a
CUDA build that breaks CPU-only torch) with ``do_pad`` = the model config's ``pad_to_square``,
which pads to a square in the mean colour before resizing, as the original LLaVA-1.5 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

IMAGE_TOKEN = "<image>"
# CLIP's normalisation constants, as in openai/clip-vit-large-patch14-336's preprocessor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ModelUnavailableError(RuntimeError):
    """The configured real model cannot be loaded (no local copy, no Hub access, bad path)."""


@dataclass
class LoadedModel:
    """A LLaVA model ready for staged inference."""

    model: LlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_processor: LlavaImageProcessorPil
    image_token_id: int
    prompt_template: str
    device: torch.device
    dtype: torch.dtype

    @property
    def feature_layer(self) -> int:
        return self.model.config.vision_feature_layer

    @property
    def keeps_cls(self) -> bool:
        """True when the LLM is fed the CLS token too (``vision_feature_select_strategy: full``)."""
        return self.model.config.vision_feature_select_strategy == "full"

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image that the unpruned model feeds the LLM."""
        vision = self.model.config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        return patches + 1 if self.keeps_cls else patches


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on cuda (as the paper runs LLaVA), float32 on cpu."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype={name!r} is not one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + specials) built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def llava_config(vision_config, text_config, tokenizer, feature_layer: int) -> LlavaConfig:
    """LLaVA-1.5's wiring of a vision and a text config: ``<image>`` from ``tokenizer``, CLS dropped."""
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy="default",
    )


def build_tiny_llava(tiny_cfg, seed: int) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerFast]:
    """A seeded random LLaVA with the real token grid; widths and LLM depth from ``tiny_cfg``."""
    tokenizer = build_byte_tokenizer()
    vision, text = tiny_cfg["vision"], tiny_cfg["text"]
    vision_config = CLIPVisionConfig(
        hidden_size=vision["hidden_size"],
        intermediate_size=vision["intermediate_size"],
        num_hidden_layers=vision["num_layers"],
        num_attention_heads=vision["num_heads"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
    )
    text_config = LlamaConfig(
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_layers"],
        num_attention_heads=text["num_heads"],
        num_key_value_heads=text["num_heads"],
        max_position_embeddings=text["max_position_embeddings"],
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = llava_config(vision_config, text_config, tokenizer, tiny_cfg["feature_layer"])
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlavaForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def clip_image_processor(image_size: int, pad_to_square: bool) -> LlavaImageProcessorPil:
    """CLIP preprocessing (resize shortest edge, centre crop, normalise) built without a download."""
    return LlavaImageProcessorPil(
        do_pad=pad_to_square,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


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


def _unavailable(model_cfg, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Cannot load model {model_cfg['name']!r} from {model_cfg['path']!r}: {reason}\n"
        f"Download the weights on a machine with Hugging Face Hub access "
        f"(`huggingface-cli download {model_cfg['path']}`) and point the run at them with "
        f"`model.path=/local/dir/with/the/weights` (or set HF_HOME to a cache that holds them); "
        f"on a machine with Hub access, `model.download=true` fetches them."
    )


def locate_weights(model_cfg) -> str | None:
    """Where an ``hf`` model's weights are read from; raises at once when they cannot be had.

    None for ``tiny`` models (built, not read).
    """
    if model_cfg["kind"] != "hf":
        return None
    source = local_snapshot(model_cfg["path"])
    if source is not None:
        return source
    if not model_cfg["download"]:
        raise _unavailable(
            model_cfg, "it is not on disk (neither a directory nor in the HF cache) and model.download=false."
        )
    return model_cfg["path"]


def _load_hf(model_cfg, device: torch.device, dtype: torch.dtype):
    source = locate_weights(model_cfg)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = LlavaForConditionalGeneration.from_pretrained(source, dtype=dtype)
        image_processor = LlavaImageProcessorPil.from_pretrained(source, do_pad=model_cfg["pad_to_square"])
    except OSError as err:
        raise _unavailable(model_cfg, f"{type(err).__name__}: {err}") from err
    return model, tokenizer, image_processor


def load_model(model_cfg, device: torch.device, dtype: torch.dtype, seed: int) -> LoadedModel:
    """Load the model named by ``model_cfg`` (a `configs/model/*.yaml` mapping) in eval mode."""
    kind = model_cfg["kind"]
    if kind == "tiny":
        model, tokenizer = build_tiny_llava(model_cfg["tiny"], seed)
        image_size = model.config.vision_config.image_size
        image_processor = clip_image_processor(image_size, model_cfg["pad_to_square"])
        model = model.to(dtype)
    elif kind == "hf":
        model, tokenizer, image_processor = _load_hf(model_cfg, device, dtype)
    else:
        raise ValueError(f"model.kind={kind!r} is not one of: tiny, hf")
    model = model.to(device).eval()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id != model.config.image_token_id:
        raise ValueError(
            f"tokenizer maps {IMAGE_TOKEN} to {image_token_id} but the model expects {model.config.image_token_id}"
        )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        image_token_id=image_token_id,
        prompt_template=model_cfg["prompt_template"],
        device=device,
        dtype=dtype,
    )
