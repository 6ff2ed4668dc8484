"""The models scripts/bench_latency.py (and ttft_check.py) time: LLaVA-1.5-7B and LLaVA-Video-7B-Qwen2 at
their real shapes with random weights (latency does not depend on the weights, so nothing is downloaded), or
tiny widths with the real token grids and encoder depths (for tests), each with its prompt and CDPruner's
text model.

Prompt, layout, frame sampling and time instruction come from the model's own config
(configs/model/llava15_7b.yaml, llava_video_7b.yaml), so the benchmark feeds the LLM exactly the
sequence layout the harness does. The real tokenizers (Llama's SentencePiece, Qwen2's BPE) are not
available offline: a word-level tokenizer over the prompt's own words stands in, splitting numbers
into single digits as both real tokenizers do (the 64 timestamps of LLaVA-Video's time instruction
are then about as many tokens as Qwen2 makes of them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)

from baselines.pruners import build_tiny_clip
from baselines.siglip_relevance import build_siglip_text_and_head, build_tiny_siglip
from evoprune.harness.benchmarks.shapes import CLIP_L_336, SIGLIP_SO400M_384, clip_l_text_and_projections
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.models.loading import (
    LoadedModel,
    clip_image_processor,
    llava_config,
    loaded_model,
    siglip_image_processor,
)
from evoprune.harness.models.tiny_tokenizers import IMAGE_TOKEN, QWEN_CHAT_TOKENS, build_byte_tokenizer

VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
QWEN2_7B = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4
)
TINY_VISION = dict(hidden_size=64, intermediate_size=256, num_attention_heads=4)
TINY_LLM = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4)


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: its harness config, shapes per ``--shapes``, and its sample."""

    label: str
    config: str  # configs/model/<config>.yaml
    vision: dict  # shapes → vision tower config fields
    llm: dict  # shapes → decoder config fields (num_key_value_heads included)
    vocab_size: dict  # shapes → LLM vocabulary
    question: str
    frames: tuple[int, ...]  # frame counts benchmarked (1 for an image model)
    budgets: tuple[int, ...]  # the paper's budgets for this model (per image / per frame)

    @property
    def model_cfg(self):
        return OmegaConf.load(CONFIG_DIR / "model" / f"{self.config}.yaml")

    @property
    def is_video(self) -> bool:
        return self.model_cfg.media == "video"


MODELS = {
    "llava15": ModelSpec(
        label="LLaVA-1.5-7B",
        config="llava15_7b",
        vision={"real": CLIP_L_336, "tiny": CLIP_L_336 | TINY_VISION},
        llm={"real": VICUNA_7B | {"num_key_value_heads": 32}, "tiny": TINY_LLM | {"num_key_value_heads": 4}},
        vocab_size={"real": 32000, "tiny": 1000},
        # A VQAv2 question with lmms-eval's answer-format instruction.
        question="What color is the umbrella the woman is holding?\nAnswer the question using a single word or phrase.",
        frames=(1,),
        budgets=(128, 64, 32),
    ),
    "llava_video": ModelSpec(
        label="LLaVA-Video-7B-Qwen2",
        config="llava_video_7b",
        vision={"real": SIGLIP_SO400M_384, "tiny": SIGLIP_SO400M_384 | TINY_VISION},
        llm={"real": QWEN2_7B, "tiny": TINY_LLM | {"num_key_value_heads": 2}},
        vocab_size={"real": 152064, "tiny": 1000},
        # A Video-MME question as lmms-eval's videomme task words it for llava_vid (w/o subtitles).
        question=(
            "Select the best answer to the following multiple-choice question based on the video and the "
            "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\n"
            "What is the man in the red jacket doing when the dog first appears?\n"
            "A. Cooking dinner.\nB. Reading a newspaper.\nC. Repairing a bicycle.\nD. Watering the garden.\n"
            "The best answer is:"
        ),
        frames=(1, 8, 64),
        budgets=(64, 32, 16),
    ),
}


def build_word_tokenizer(texts: list[str], bos: bool, specials: tuple[str, ...], eos: str):
    """A word-level tokenizer over the words of ``texts`` (words, punctuation, newlines and single
    digits are tokens), built offline; ``specials`` are single tokens, ``<image>`` among them."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    words = set()
    for text in texts:
        for part in re.split("|".join(map(re.escape, (*specials, IMAGE_TOKEN))), text):
            words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(part))
    base = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(base + sorted(words - set(base)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizer
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *specials]})
    tokenizer.eos_token = eos
    return tokenizer


def prompt_texts(spec: ModelSpec) -> list[str]:
    """Every text the prompt can contain: template, question, and the time instruction's words and digits."""
    cfg = spec.model_cfg
    texts = [cfg.prompt_template, spec.question]
    if spec.is_video:
        texts += [cfg.video.time_instruction, "0123456789.s,"]
    return texts


def build_model(spec: ModelSpec, shapes: str, llm_layers: int, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """``spec``'s model with random weights, the LLM built with ``llm_layers`` decoder layers."""
    cfg = spec.model_cfg
    video = spec.is_video
    tokenizer = build_word_tokenizer(
        prompt_texts(spec),
        bos=not video,  # Llama prepends <s>, Qwen2 nothing
        specials=QWEN_CHAT_TOKENS if video else (),
        eos=cfg.stop_tokens[0] if video else "</s>",
    )
    llm = spec.llm[shapes] | {"num_hidden_layers": llm_layers}
    ids = dict(
        vocab_size=spec.vocab_size[shapes],
        bos_token_id=None if video else tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if len(tokenizer) > ids["vocab_size"]:
        raise ValueError(
            f"the prompt needs {len(tokenizer)} token ids, the {shapes} vocabulary has {ids['vocab_size']}"
        )
    torch.manual_seed(0)
    if video:
        vision = SiglipVisionConfig(**spec.vision[shapes] | {"vision_use_head": False})
        text = Qwen2Config(**llm, **ids, max_position_embeddings=32768, rope_theta=1_000_000.0)
        config = LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            video_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
        )
        model_class, processor = LlavaOnevisionForConditionalGeneration, siglip_image_processor(vision.image_size)
    else:
        vision = CLIPVisionConfig(**spec.vision[shapes])
        text = LlamaConfig(**llm, **ids, max_position_embeddings=4096)
        config = llava_config(vision, text, tokenizer, feature_layer=-2)
        model_class, processor = LlavaForConditionalGeneration, clip_image_processor(vision.image_size, True)
    with torch.device(device):  # initialised in place: a 7B model in float32 on the host would not fit
        model = model_class._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model = model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return loaded_model(cfg, model, tokenizer, processor, device, dtype)


def cdpruner_text_model(loaded: LoadedModel, shapes: str) -> tuple[str, torch.nn.Module, object]:
    """CDPruner's relevance space, image-text model (float32) and tokenizer for ``loaded``'s tower:
    CLIP-L's text tower for LLaVA-1.5, SigLIP-so400m's text tower and head for LLaVA-Video (default
    ``relevance: siglip_head``), tokenised by the byte tokenizer (the real BPE vocabularies are
    offline; bytes give more tokens, so the text tower cost measured is an upper bound)."""
    tokenizer = build_byte_tokenizer()
    hidden = loaded.model.config.vision_config.hidden_size
    if loaded.media == "video":
        space = "siglip_head"
        if shapes == "real":
            # SigLIP-so400m/384's text tower (27 layers, width 1152) and its head, random weights.
            text = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
            head = dict(intermediate_size=4304, num_attention_heads=16)
            model = build_siglip_text_and_head(hidden, tokenizer, text, head)
        else:
            model = build_tiny_siglip(hidden, tokenizer, seed=0)
    else:
        space = "clip"
        model = (
            clip_l_text_and_projections(hidden, len(tokenizer))
            if shapes == "real"
            else build_tiny_clip(hidden, tokenizer, seed=0)
        )
    return space, model.to(loaded.device, torch.float32).eval(), tokenizer


def sample_visual(spec: ModelSpec, folder: Path):
    """The benchmark's input: a 640x480 random image, or a 96-frame 640x360 H.264 clip (24 fps) in ``folder``."""
    rng = np.random.default_rng(0)
    if not spec.is_video:
        return Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    from evoprune.harness.data.smoke_video import write_mp4  # PyAV: only where a clip is written

    blocks = rng.integers(0, 256, (96, 23, 40, 3), dtype=np.uint8)  # 16x16-pixel blocks: decodes like real video
    frames = blocks.repeat(16, axis=1).repeat(16, axis=2)[:, :360]
    path = folder / "bench_clip.mp4"
    write_mp4(path, frames, fps=24)
    return path
