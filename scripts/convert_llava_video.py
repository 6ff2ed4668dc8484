"""Write an HF-format copy of an original LLaVA-Video checkpoint (``lmms-lab/LLaVA-Video-7B-Qwen2``).

Reads ORIGINAL_DIR (LLaVA-NeXT's ``LlavaQwenForCausalLM`` layout, safetensors shards, tokenizer files)
with `evoprune.harness.models.video_weights.load_llava_video`, the SigLIP tower's shape taken from the
``vision`` mapping of a model config YAML. The tokenizer gets the harness's ``<image>`` special token,
whose id becomes the config's ``image_token_index``; model and tokenizer are saved with
``save_pretrained`` into OUT_DIR, which `load_llava_video` (and so the harness) reads back. Needs the
whole model in CPU memory (about 16 GB in bfloat16); writes no processor config.

    python scripts/convert_llava_video.py ORIGINAL_DIR OUT_DIR --model-config configs/model/<video>.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.models.loading import resolve_dtype, vision_config_fields  # noqa: E402
from evoprune.harness.models.tiny_tokenizers import IMAGE_TOKEN  # noqa: E402
from evoprune.harness.models.video_weights import is_original_layout, load_llava_video  # noqa: E402


def convert(original_dir: Path, out_dir: Path, vision: dict, dtype: torch.dtype) -> int:
    """Convert; returns the ``<image>`` token id written into the config."""
    if not is_original_layout(original_dir):
        raise ValueError(f"{original_dir} is not an original LLaVA-NeXT (llava_qwen) checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(original_dir)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)  # keeps the tokenizer's own special tokens
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    model = load_llava_video(original_dir, vision, image_token_id, dtype)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return image_token_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--model-config",
        type=Path,
        required=True,
        help="model YAML with the tower's `vision` mapping (configs/model/llava_video_7b.yaml)",
    )
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16 (as the checkpoint), float16 or float32")
    args = parser.parse_args(argv)
    vision = vision_config_fields(OmegaConf.load(args.model_config).vision)
    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    image_token_id = convert(args.original_dir, args.out_dir, vision, dtype)
    print(f"wrote {args.out_dir} ({IMAGE_TOKEN} = token {image_token_id})")


if __name__ == "__main__":
    main()
