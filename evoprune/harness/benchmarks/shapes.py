"""The real towers' and text towers' shapes, built with random weights (latency does not depend on the
weights, so nothing is downloaded), and tiny widths with the real depths and grids for tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

CLIP_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
)
# google/siglip-so400m-patch14-384 as LLaVA-Video (LLaVA-NeXT's SigLipVisionTower) runs it: the
# last of its 27 layers and the pooling head deleted, features = the last remaining layer.
SIGLIP_SO400M_384 = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, image_size=12 * 14)


@dataclass(frozen=True)
class Tower:
    label: str
    config_class: type
    model_class: type
    shapes: dict  # "real" / "tiny" → config kwargs (tiny, for tests: the real depth, a 12×12 grid, tiny widths)
    prefix: int  # CLS tokens kept out of merging
    feature_layer: int
    defaults: dict = field(default_factory=dict)  # argparse defaults that differ per tower


TOWERS = {
    "clip": Tower(
        label="CLIP-L/336",
        config_class=CLIPVisionConfig,
        model_class=CLIPVisionModel,
        shapes={
            "real": CLIP_L_336,
            "tiny": CLIP_L_336 | TINY,
        },
        prefix=1,
        feature_layer=-2,
        defaults=dict(frames=1, budgets=[128, 64, 32], repeats=5, order="sequential", stat="median"),
    ),
    "siglip": Tower(
        label="SigLIP-so400m/384",
        config_class=SiglipVisionConfig,
        model_class=SiglipVisionModel,
        shapes={
            "real": SIGLIP_SO400M_384,
            "tiny": SIGLIP_SO400M_384 | TINY,
        },
        prefix=0,
        feature_layer=-1,
        defaults=dict(frames=64, budgets=[64, 32, 16], repeats=2, order="interleaved", stat="min", warmup_frames=2),
    ),
}


def clip_l_text_and_projections(vision_hidden: int, vocab_size: int) -> CLIPModel:
    """CLIP ViT-L/14-336's text tower and projections (768-d), random weights; a 1-layer vision stub."""
    text = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=64, num_hidden_layers=1, num_attention_heads=16
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768)
    return CLIPModel(config).eval()
