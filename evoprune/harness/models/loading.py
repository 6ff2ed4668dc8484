"""Load a LLaVA model with its tokenizer and image processor.

Two architectures (``model.architecture``): ``llava`` (LLaVA-1.5, `LlavaForConditionalGeneration`,
CLIP with a [CLS] token) and ``llava_onevision`` (LLaVA-Video-7B-Qwen2 on transformers'
`LlavaOnevisionForConditionalGeneration`, a 26-layer SigLIP without [CLS], and Qwen2; only its
modules are used: the harness lays out the visual tokens itself, see `evoprune.harness.inference.layout`).
Two sources, one result type:
- ``kind: hf``: an HF model id or a local directory (e.g. ``llava-hf/llava-1.5-7b-hf``). The
  weights must already be on disk (the directory, or the HF cache) unless ``download: true``; a
  model that is not there, or fails to load, raises `ModelUnavailableError` at once, naming the
  id and the ``model.path=`` override (no slow Hub retries on machines without Hub access).
  LLaVA-Video's original checkpoint layout (``lmms-lab/LLaVA-Video-7B-Qwen2``) is read through
  `evoprune.harness.models.video_weights`, as is an HF-format conversion.
- ``kind: tiny``: a randomly initialised model built from config, seeded and deterministic, with
  the real token grid and depth of its tower (CLIP-L/336: 24x24 patches + CLS, 24 layers; SigLIP
  so400m/384: 27x27 patches, 26 layers) and only the widths shrunk, a small Llama or Qwen2, and a
  byte-level tokenizer built locally. Its answers are noise; it exists so the whole pipeline runs
  offline.

Images and frames are preprocessed by transformers' PIL processors (PyPI's torchvision is a CUDA
build that breaks CPU-only torch): LLaVA-1.5 by `LlavaImageProcessorPil` with ``do_pad`` = the
model config's ``pad_to_square`` (a square in the mean colour before resizing, as the original
LLaVA-1.5 does); LLaVA-Video by `SiglipImageProcessorPil`: bicubic resize to the tower's square
size, mean = std = 0.5, as SigLIP-so400m's preprocessor config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from evoprune.harness.models.tiny_tokenizers import IMAGE_TOKEN, build_byte_tokenizer, qwen_chat_tokenizer
from evoprune.harness.models.weights import local_snapshot, locate_weights, missing_pruner_weights, unavailable_model

# CLIP's normalisation constants, as in openai/clip-vit-large-patch14-336's preprocessor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


ARCHITECTURES = {"llava": LlavaForConditionalGeneration, "llava_onevision": LlavaOnevisionForConditionalGeneration}
MEDIA = ("image", "video")


@dataclass(frozen=True)
class VisualLayout:
    """How projected visual tokens reach the LLM (`evoprune.harness.inference.layout`), from the model config."""

    pool_stride: int | None = None  # 2x2 average pooling of each frame's grid after the projector
    newline: str = "none"  # grid: a newline after every row of every frame; none
    merged_newline: str = "none"  # for in-encoder-merged tokens (no grid): frame | none


@dataclass(frozen=True)
class VideoSampling:
    """LLaVA-Video's frame sampling and time instruction (model config ``video``)."""

    frames: int = 64
    frame_batch: int = 16  # frames per vision-tower forward
    decode_workers: int = 1  # decord readers decoding the sampled frames side by side
    time_instruction: str = ""  # formatted with duration, frames, timestamps; "" leaves it out


@dataclass
class LoadedModel:
    """A LLaVA model ready for staged inference."""

    model: LlavaForConditionalGeneration | LlavaOnevisionForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_processor: LlavaImageProcessorPil | SiglipImageProcessorPil
    image_token_id: int
    prompt_template: str
    device: torch.device
    dtype: torch.dtype
    media: str = "image"
    layout: VisualLayout = VisualLayout()
    video: VideoSampling | None = None
    stop_token_ids: tuple[int, ...] = ()  # ended like EOS (e.g. Qwen's <|im_end|>)

    @property
    def feature_layer(self) -> int:
        return self.model.config.vision_feature_layer

    @property
    def cls_tokens(self) -> int:
        """[CLS] tokens at the front of the tower's output: 1 for CLIP, 0 for SigLIP."""
        return 1 if isinstance(self.model.model.vision_tower, CLIPVisionModel) else 0

    @property
    def dropped_prefix(self) -> int:
        """Leading tower tokens not fed to the LLM (CLIP's [CLS] under ``select_strategy: default``)."""
        return self.cls_tokens if self.model.config.vision_feature_select_strategy == "default" else 0

    @property
    def encoder_tokens(self) -> int:
        """Patch tokens per image or frame out of the tower ([CLS] not counted): 576 CLIP, 729 SigLIP."""
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image or frame that the unpruned model feeds the LLM (newlines not counted)."""
        tokens = self.encoder_tokens + self.cls_tokens - self.dropped_prefix
        stride = self.layout.pool_stride
        return tokens if stride is None else (math.isqrt(tokens) // stride) ** 2


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on cuda (as the paper runs LLaVA), float32 on cpu."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype={name!r} is not one of: auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


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


def vision_config_fields(vision) -> dict:
    """A model config's ``vision`` mapping (num_layers, num_heads, …) as transformers config fields."""
    return dict(
        hidden_size=vision["hidden_size"],
        intermediate_size=vision["intermediate_size"],
        num_hidden_layers=vision["num_layers"],
        num_attention_heads=vision["num_heads"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
    )


def _text_fields(text, tokenizer) -> dict:
    return dict(
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


def _seeded(build, seed: int):
    """``build()`` under ``torch.manual_seed(seed)``, leaving the global RNG state as it was."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(generator_state)


POSITION_EMBEDDINGS = ("random", "sincos")


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine position embeddings of a ``side`` x ``side`` grid, raster order: (side², dim).

    The first half of the channels encodes the row, the second the column, each as sin/cos pairs over
    geometric frequencies (as MAE's ``get_2d_sincos_pos_embed``); ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"sincos position embeddings need a width divisible by 4, got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def encode(positions):
        angles = positions.flatten().double()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def _position_embedding(vision) -> str:
    positions = vision.get("position_embedding", "random")
    if positions not in POSITION_EMBEDDINGS:
        raise ValueError(f"vision.position_embedding={positions!r} is not one of: {', '.join(POSITION_EMBEDDINGS)}")
    return positions


def _use_sincos(tower, vision_config) -> None:
    """Replace ``tower``'s position table by `sincos_2d` (a [CLS] row first, if any, at zero)."""
    table = tower.embeddings.position_embedding.weight
    side = vision_config.image_size // vision_config.patch_size
    with torch.no_grad():
        table[: table.shape[0] - side * side] = 0.0
        table[-side * side :] = sincos_2d(side, vision_config.hidden_size)


def build_tiny_llava(
    tiny_cfg, seed: int, tokenizer: PreTrainedTokenizerFast | None = None
) -> tuple[LlavaForConditionalGeneration, PreTrainedTokenizerFast]:
    """A seeded random LLaVA-1.5 with the real CLIP token grid; widths and LLM depth from ``tiny_cfg``.

    ``vision.position_embedding: sincos`` replaces the tower's random position table by fixed 2-D
    sin/cos embeddings ([CLS] at zero), so a token's grid position is decodable from its features.
    ``tokenizer``: default the byte-level one; the vision tower does not depend on it (it is drawn first).
    """
    tokenizer = build_byte_tokenizer() if tokenizer is None else tokenizer
    vision = tiny_cfg["vision"]
    positions = _position_embedding(vision)
    vision_config = CLIPVisionConfig(**vision_config_fields(vision))
    text_config = LlamaConfig(**_text_fields(tiny_cfg["text"], tokenizer))
    config = llava_config(vision_config, text_config, tokenizer, tiny_cfg["feature_layer"])
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    if positions == "sincos":
        _use_sincos(model.model.vision_tower, vision_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def build_tiny_llava_video(
    tiny_cfg, seed: int, tokenizer: PreTrainedTokenizerFast | None = None
) -> tuple[LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast]:
    """A seeded random LLaVA-Video: SigLIP with the real depth and grid, small widths, a small Qwen2.

    ``tokenizer``: default `qwen_chat_tokenizer`'s byte-level one. ``vision.position_embedding: sincos``
    as in `build_tiny_llava` (SigLIP has no [CLS]).
    """
    tokenizer = qwen_chat_tokenizer() if tokenizer is None else tokenizer
    positions = _position_embedding(tiny_cfg["vision"])
    vision_config = SiglipVisionConfig(**vision_config_fields(tiny_cfg["vision"]), vision_use_head=False)
    text_fields = _text_fields(tiny_cfg["text"], tokenizer)
    text_fields["bos_token_id"] = None
    text_config = Qwen2Config(**text_fields)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        video_token_index=image_token_id,  # never used: the harness places every visual token itself
        vision_feature_layer=tiny_cfg["feature_layer"],
        vision_feature_select_strategy="full",
    )
    model = _seeded(lambda: LlavaOnevisionForConditionalGeneration(config), seed)
    if positions == "sincos":
        _use_sincos(model.model.vision_tower, vision_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
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


def siglip_image_processor(image_size: int) -> SiglipImageProcessorPil:
    """SigLIP-so400m's preprocessing (bicubic resize to a square, mean = std = 0.5), built locally."""
    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def load_pruner_weights(cfg, field: str, what: str, model_class, pruner: str = "cdpruner"):
    """``model_class`` in float32 and its tokenizer from ``cfg['path']`` (a directory or a cached Hub id);
    `missing_pruner_weights` at once when not on disk and ``cfg['download']`` is not set."""
    from transformers import AutoTokenizer

    source = local_snapshot(cfg["path"])
    if source is None and not cfg.get("download", False):
        raise missing_pruner_weights(pruner, field, what, cfg["path"])
    source = source or cfg["path"]
    return model_class.from_pretrained(source, dtype=torch.float32), AutoTokenizer.from_pretrained(source)


def _load_hf(model_cfg, dtype: torch.dtype):
    source = locate_weights(model_cfg)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if model_cfg["architecture"] == "llava":
            model = LlavaForConditionalGeneration.from_pretrained(source, dtype=dtype)
            image_processor = LlavaImageProcessorPil.from_pretrained(source, do_pad=model_cfg["pad_to_square"])
            return model, tokenizer, image_processor
        from evoprune.harness.models.video_weights import load_llava_video

        # The original checkpoint's tokenizer has no image token (LLaVA-NeXT splices by position):
        # one is added; its embedding row is never read (the pipeline overwrites those positions).
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)  # keeps the tokenizer's own special tokens
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        model = load_llava_video(source, vision_config_fields(model_cfg["vision"]), image_token_id, dtype)
    except OSError as err:
        raise unavailable_model(model_cfg, f"{type(err).__name__}: {err}") from err
    return model, tokenizer, siglip_image_processor(model.config.vision_config.image_size)


def _build_tiny(model_cfg, seed: int):
    """The seeded random tiny model; with ``checkpoint``, its tower from ``checkpoint.tower_seed`` and
    the trained projector + LLM from the file (`evoprune.harness.models.trained_checkpoint`)."""
    checkpoint = model_cfg.get("checkpoint")
    video = model_cfg["architecture"] != "llava"
    build = build_tiny_llava_video if video else build_tiny_llava
    if not checkpoint:
        model, tokenizer = build(model_cfg["tiny"], seed)
    else:
        from evoprune.harness.models.trained_checkpoint import load_trained, read_checkpoint

        stored = read_checkpoint(model_cfg)
        model, tokenizer = build(model_cfg["tiny"], checkpoint["tower_seed"], stored.tokenizer(video))
        load_trained(model, model_cfg, stored)
    image_size = model.config.vision_config.image_size
    if video:
        return model, tokenizer, siglip_image_processor(image_size)
    return model, tokenizer, clip_image_processor(image_size, model_cfg["pad_to_square"])


def load_model(model_cfg, device: torch.device, dtype: torch.dtype, seed: int) -> LoadedModel:
    """Load the model named by ``model_cfg`` (a `configs/model/*.yaml` mapping) in eval mode."""
    kind, architecture = model_cfg["kind"], model_cfg["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"model.architecture={architecture!r} is not one of: {', '.join(ARCHITECTURES)}")
    if kind == "tiny":
        model, tokenizer, image_processor = _build_tiny(model_cfg, seed)
        model = model.to(dtype)
    elif kind == "hf":
        model, tokenizer, image_processor = _load_hf(model_cfg, dtype)
    else:
        raise ValueError(f"model.kind={kind!r} is not one of: tiny, hf")
    return loaded_model(model_cfg, model.to(device).eval(), tokenizer, image_processor, device, dtype)


def loaded_model(model_cfg, model, tokenizer, image_processor, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """``model`` (on ``device``, in ``dtype``) with the prompt, layout and video sampling of ``model_cfg``."""
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id != model.config.image_token_id:
        raise ValueError(
            f"tokenizer maps {IMAGE_TOKEN} to {image_token_id} but the model expects {model.config.image_token_id}"
        )
    video = model_cfg.get("video")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        image_token_id=image_token_id,
        prompt_template=model_cfg["prompt_template"],
        device=device,
        dtype=dtype,
        media=model_cfg["media"],
        layout=VisualLayout(**model_cfg["layout"]),
        video=None if video is None else VideoSampling(**video),
        stop_token_ids=tuple(tokenizer.convert_tokens_to_ids(token) for token in model_cfg.get("stop_tokens", ())),
    )
