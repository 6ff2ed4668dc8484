"""LLaVA-Video weights: a tiny random OneVision model written under the original LLaVA-NeXT key names
(the inverse mapping is spelled out here, independently of the module) loads back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig

from evoprune.harness.models.video_weights import is_original_layout, load_llava_video, original_to_hf_key

# The real tower's depth (26 layers after LLaVA-NeXT drops the 27th), tiny widths and image.
VISION = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=26, num_attention_heads=2, image_size=28, patch_size=14
)
# Non-default values throughout, so a field the loader forgets to carry over changes the model.
QWEN2 = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=1_000_000.0,
    hidden_act="silu",
    tie_word_embeddings=False,
)
IMAGE_TOKEN_ID = 299
TOWER = "model.vision_tower.vision_tower.vision_model."
# transformers 5.x key prefix → original LLaVA-NeXT key prefix.
TO_ORIGINAL = (
    ("model.vision_tower.", TOWER),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.language_model.", "model."),
    ("model.image_newline", "model.image_newline"),
    ("lm_head.weight", "lm_head.weight"),
)


def to_original(key: str) -> str:
    for hf, original in TO_ORIGINAL:
        if key.startswith(hf):
            return original + key[len(hf) :]
    raise AssertionError(f"test mapping misses {key}")


def original_config(**changes) -> dict:
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_hidden_size": VISION["hidden_size"],
        "mm_vision_select_layer": -2,
        "image_aspect_ratio": "anyres_max_9",
        "rope_scaling": None,
        "use_sliding_window": False,
        "sliding_window": 131072,
        "torch_dtype": "bfloat16",
        **QWEN2,
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def source() -> LlavaOnevisionForConditionalGeneration:
    qwen = {k: v for k, v in QWEN2.items() if k != "rope_theta"}
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION, vision_use_head=False),
        text_config=Qwen2Config(**qwen, rope_parameters={"rope_type": "default", "rope_theta": QWEN2["rope_theta"]}),
        image_token_index=IMAGE_TOKEN_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # LayerNorms and biases start at 1 / 0: make every tensor distinct
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    return model


def original_weights(model) -> dict[str, torch.Tensor]:
    """The model's state dict under original names, plus the head and 27th layer LLaVA-NeXT discards."""
    weights = {to_original(key): tensor.clone().contiguous() for key, tensor in model.state_dict().items()}
    weights[TOWER + "head.probe"] = torch.randn(1, 1, VISION["hidden_size"])
    weights[TOWER + "head.attention.in_proj_weight"] = torch.randn(3 * VISION["hidden_size"], VISION["hidden_size"])
    weights[TOWER + "encoder.layers.26.mlp.fc1.weight"] = torch.randn(48, VISION["hidden_size"])
    return weights


def write_original(directory: Path, weights: dict[str, torch.Tensor], config: dict) -> Path:
    """A two-shard safetensors checkpoint with its index, and the original-style config.json."""
    directory.mkdir()
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({key: weights[key] for key in shard_keys}, str(directory / name))
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def original_dir(source, tmp_path_factory) -> Path:
    return write_original(tmp_path_factory.mktemp("ckpt") / "original", original_weights(source), original_config())


def assert_same_weights(loaded, source, dtype=torch.float32):
    expected = source.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert actual[key].dtype == dtype, key
        assert torch.equal(actual[key], tensor.to(dtype)), key


def projected_features(model, pixels):
    """The tower's last-layer output (before post_layernorm, as LLaVA-NeXT's) through the projector."""
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        return model.model.multi_modal_projector(hidden)


def assert_same_outputs(loaded, source):
    torch.manual_seed(1)
    embeds = torch.randn(2, 7, QWEN2["hidden_size"])
    pixels = torch.randn(1, 3, VISION["image_size"], VISION["image_size"])
    with torch.no_grad():
        assert torch.equal(loaded(inputs_embeds=embeds).logits, source(inputs_embeds=embeds).logits)
    assert torch.equal(projected_features(loaded, pixels), projected_features(source, pixels))


def test_key_mapping_names():
    assert original_to_hf_key(TOWER + "encoder.layers.3.self_attn.q_proj.weight") == (
        "model.vision_tower.encoder.layers.3.self_attn.q_proj.weight"
    )
    assert original_to_hf_key("model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert original_to_hf_key("model.layers.0.mlp.up_proj.weight") == "model.language_model.layers.0.mlp.up_proj.weight"
    assert original_to_hf_key("model.image_newline") == "model.image_newline"
    assert original_to_hf_key(TOWER + "head.mlp.fc1.weight") is None
    assert original_to_hf_key(TOWER + "encoder.layers.26.layer_norm1.bias") is None
    with pytest.raises(ValueError, match="model.mm_projector.1.weight"):
        original_to_hf_key("model.mm_projector.1.weight")


def test_original_layout_loads_exactly(source, original_dir):
    assert is_original_layout(original_dir)
    loaded = load_llava_video(original_dir, dict(VISION), IMAGE_TOKEN_ID, torch.float32)
    assert not loaded.training
    config = loaded.config
    assert (config.image_token_id, config.vision_feature_layer, config.vision_feature_select_strategy) == (
        IMAGE_TOKEN_ID,
        -1,
        "full",
    )
    assert config.projector_hidden_act == "gelu" and not config.vision_config.vision_use_head
    assert not config.tie_word_embeddings
    assert_same_weights(loaded, source)
    assert_same_outputs(loaded, source)


def test_hf_format_round_trip_in_bfloat16(source, original_dir, tmp_path):
    loaded = load_llava_video(original_dir, dict(VISION), IMAGE_TOKEN_ID, torch.float32)
    loaded.save_pretrained(tmp_path / "hf")
    assert not is_original_layout(tmp_path / "hf")
    reloaded = load_llava_video(tmp_path / "hf", dict(VISION), IMAGE_TOKEN_ID, torch.bfloat16)
    assert not reloaded.training
    assert_same_weights(reloaded, source, torch.bfloat16)


def test_hf_format_with_a_different_tower_is_refused(source, tmp_path):
    source.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="num_hidden_layers=26 \\(want 27\\)"):
        load_llava_video(tmp_path / "hf", {**VISION, "num_hidden_layers": 27}, IMAGE_TOKEN_ID, torch.float32)
    with pytest.raises(ValueError, match="image token id is 299, the tokenizer's 5"):
        load_llava_video(tmp_path / "hf", dict(VISION), 5, torch.float32)


def test_unexpected_key_is_named(source, tmp_path):
    weights = original_weights(source)
    weights["model.mm_projector.1.weight"] = torch.zeros(1)
    directory = write_original(tmp_path / "extra", weights, original_config())
    with pytest.raises(ValueError, match="model.mm_projector.1.weight"):
        load_llava_video(directory, dict(VISION), IMAGE_TOKEN_ID, torch.float32)


def test_missing_key_is_named(source, tmp_path):
    weights = original_weights(source)
    del weights["model.layers.1.mlp.up_proj.weight"]
    directory = write_original(tmp_path / "short", weights, original_config())
    with pytest.raises(ValueError, match="missing: model.language_model.layers.1.mlp.up_proj.weight"):
        load_llava_video(directory, dict(VISION), IMAGE_TOKEN_ID, torch.float32)


def test_wrong_shape_is_named(source, tmp_path):
    directory = write_original(tmp_path / "wide", original_weights(source), original_config(num_key_value_heads=4))
    with pytest.raises(ValueError, match="shape of model.language_model.layers.0.self_attn.k_proj.weight"):
        load_llava_video(directory, dict(VISION), IMAGE_TOKEN_ID, torch.float32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mm_projector_type": "linear"}, "mm_projector_type='linear'"),
        ({"mm_vision_tower": "openai/clip-vit-large-patch14-336"}, "openai/clip-vit-large-patch14-336"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ],
)
def test_unsupported_original_config_is_named(original_dir, tmp_path, change, message):
    directory = tmp_path / "other"
    directory.mkdir()
    for shard in original_dir.iterdir():
        (directory / shard.name).symlink_to(shard)
    (directory / "config.json").unlink()
    (directory / "config.json").write_text(json.dumps(original_config(**change)))
    with pytest.raises(ValueError, match=message):
        load_llava_video(directory, dict(VISION), IMAGE_TOKEN_ID, torch.float32)


def test_image_token_outside_the_embedding_is_refused(original_dir):
    with pytest.raises(ValueError, match="image token id 300 has no row in the 300-row embedding"):
        load_llava_video(original_dir, dict(VISION), 300, torch.float32)


def test_absent_lm_head_is_tied_to_embed_tokens(source, tmp_path):
    weights = original_weights(source)
    del weights["lm_head.weight"]
    directory = write_original(tmp_path / "tied", weights, original_config())
    loaded = load_llava_video(directory, dict(VISION), IMAGE_TOKEN_ID, torch.float32)
    assert loaded.config.tie_word_embeddings
    assert loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, source.model.language_model.embed_tokens.weight)


def test_layout_detection_without_config_hint(source, original_dir, tmp_path):
    directory = tmp_path / "renamed"
    directory.mkdir()
    for shard in original_dir.glob("*.safetensors"):
        (directory / shard.name).symlink_to(shard)
    (directory / "config.json").write_text(json.dumps({"model_type": "something_else"}))
    assert is_original_layout(directory)
    source.save_pretrained(tmp_path / "hf")
    assert not is_original_layout(tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llava_video(tmp_path, dict(VISION), IMAGE_TOKEN_ID, torch.float32)


def test_convert_script_writes_a_loadable_hf_copy(source, original_dir, tmp_path):
    import importlib.util

    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = tmp_path / "original"
    directory.mkdir()
    for path in original_dir.iterdir():
        (directory / path.name).symlink_to(path)
    words = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>").save_pretrained(directory)
    harness_names = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}
    vision = {harness_names.get(key, key): value for key, value in VISION.items()}  # as configs/model/*.yaml name them
    (tmp_path / "video.yaml").write_text(json.dumps({"vision": vision}))  # JSON is YAML
    spec = importlib.util.spec_from_file_location("convert_llava_video", "scripts/convert_llava_video.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    script.main([str(directory), str(tmp_path / "hf"), "--model-config", str(tmp_path / "video.yaml")])

    assert AutoTokenizer.from_pretrained(tmp_path / "hf").convert_tokens_to_ids("<image>") == 3
    converted = load_llava_video(tmp_path / "hf", dict(VISION), 3, torch.bfloat16)
    assert converted.config.image_token_id == 3
    assert_same_weights(converted, source, torch.bfloat16)
