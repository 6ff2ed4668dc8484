"""`evoprune.hf`: EvoPrune in a whole transformers LLaVA and LLaVA-OneVision, processor included."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from PIL import Image
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.processing_utils import ProcessorMixin

import evoprune
from evoprune.harness.inference.pipeline import build_prompt, generate
from evoprune.harness.inference.pruning import build_pruner
from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer

IMAGE = Image.new("RGB", (100, 60), (10, 200, 30))
for x in range(20, 50):
    IMAGE.putpixel((x, 30), (200, 20, 20))


def llava_processor(loaded) -> LlavaProcessor:
    config = loaded.model.config
    return LlavaProcessor(
        image_processor=loaded.image_processor,
        tokenizer=loaded.tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )


def greedy(model, inputs, tokens: int = 6):
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=tokens, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    return out.sequences[0, inputs["input_ids"].shape[1] :], torch.stack(out.logits)


def evoprune_state(model, processor) -> list[str]:
    """Every attribute EvoPrune left on the model's parts and the processor."""
    owners = [processor, model.model, model.model.vision_tower, *model.model.vision_tower.modules()]
    return sorted({name for owner in owners for name in vars(owner) if "evoprune" in name})


def test_llava_generates_as_the_harness_pipeline_does(tiny_loaded):
    """HF's own generate on the processor's inputs gives the harness's answer with `pruner=evoprune`."""
    model, processor = tiny_loaded.model, llava_processor(tiny_loaded)
    prompt = build_prompt(tiny_loaded.prompt_template, "What is shown?")
    cfg = compose_config("pruner=evoprune", "budget=32")
    pruner = build_pruner(cfg.pruner, cfg.budget)
    pruner.attach(model)
    try:
        harness = generate(tiny_loaded, pruner, IMAGE, "What is shown?", max_new_tokens=6, until=[])
    finally:
        pruner.detach(model)
    evoprune.hf.patch_llava(model, processor, budget=32)
    try:
        inputs = processor(images=IMAGE, text=prompt, return_tensors="pt")
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 32
        assert sum(evoprune.schedule_of(model.model.vision_tower)) == 576 - 32
        answer, _ = greedy(model, inputs)
    finally:
        evoprune.hf.unpatch_llava(model, processor)
    assert harness.visual_tokens_after == 32
    assert tiny_loaded.tokenizer.decode(answer, skip_special_tokens=True).strip() == harness.text


def test_llava_native_budget_is_a_no_op_and_unpatch_restores(tiny_loaded):
    model, processor = tiny_loaded.model, llava_processor(tiny_loaded)
    prompt = build_prompt(tiny_loaded.prompt_template, "What is shown?")
    inputs = processor(images=IMAGE, text=prompt, return_tensors="pt")
    native_answer, native_logits = greedy(model, inputs)
    evoprune.hf.patch_llava(model, processor, budget=576)
    try:
        same = processor(images=IMAGE, text=prompt, return_tensors="pt")
        assert torch.equal(same["input_ids"], inputs["input_ids"])
        answer, logits = greedy(model, same)
    finally:
        evoprune.hf.unpatch_llava(model, processor)
    assert torch.equal(answer, native_answer) and torch.equal(logits, native_logits)
    evoprune.hf.patch_llava(model, processor, budget=16)
    evoprune.hf.patch_llava(model, processor, budget=8)  # patching again replaces the patch
    replaced = processor(images=IMAGE, text=prompt, return_tensors="pt")["input_ids"]
    assert int((replaced == model.config.image_token_id).sum()) == 8
    evoprune.hf.unpatch_llava(model, processor)
    assert evoprune_state(model, processor) == []
    again = processor(images=IMAGE, text=prompt, return_tensors="pt")
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(greedy(model, again)[1], native_logits)


@pytest.fixture(scope="module")
def onevision(monkeypatch_module):
    """A seeded random LLaVA-OneVision (SigLIP 4×4 patches per 56-pixel crop, anyres up to 2×2 crops) with
    its processor. The processor is built without a video processor: transformers' needs torchvision, which
    this CPU environment cannot install (its PyPI wheel is a CUDA build)."""
    tokenizer = build_byte_tokenizer(extra_specials=("<video>",))
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    pinpoints = [[56, 56], [56, 112], [112, 56], [112, 112]]
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 56, "width": 56},
        crop_size={"height": 56, "width": 56},
        image_grid_pinpoints=pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    monkeypatch_module.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
    )
    return model, processor


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patcher:
        yield patcher


def by_hand(model, ids: torch.Tensor, token_id: int, crops: torch.Tensor, budget: int) -> dict:
    """``inputs_embeds`` with the placeholders holding what EvoPrune makes of ``crops`` (crops or frames of
    one image or video, in order): each merged to ``budget`` by the tower, projected, then one newline."""
    tower = model.model.vision_tower
    evoprune.patch(tower, budget, feature_layer=-1)
    try:
        with torch.no_grad():
            features = tower(crops, output_hidden_states=True).hidden_states[-1]
    finally:
        evoprune.unpatch(tower)
    with torch.no_grad():
        visual = model.model.multi_modal_projector(features).flatten(0, 1)
        visual = torch.cat([visual, model.model.image_newline[None]])
        embeds = model.get_input_embeddings()(ids).clone()
    embeds[ids == token_id] = visual
    return {"inputs_embeds": embeds, "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_onevision_image_crops_merged_and_counted(onevision):
    model, processor = onevision
    native = processor(images=IMAGE, text="<image>\nWhat is shown?", return_tensors="pt")
    evoprune.hf.patch_llava(model, processor, budget=4)
    try:
        inputs = processor(images=IMAGE, text="<image>\nWhat is shown?", return_tensors="pt")
        crops = inputs["pixel_values"].shape[1]  # the whole image and its anyres tiles: 5 for 100×60
        assert crops == 5 and int((inputs["input_ids"] == model.config.image_token_id).sum()) == crops * 4 + 1
        answer, logits = greedy(model, inputs)
    finally:
        evoprune.hf.unpatch_llava(model, processor)
    hand = by_hand(model, inputs["input_ids"], model.config.image_token_id, inputs["pixel_values"][0], 4)
    with torch.no_grad():
        expected = model(inputs_embeds=hand["inputs_embeds"], attention_mask=hand["attention_mask"]).logits[0, -1]
    assert torch.allclose(logits[0, 0], expected, atol=1e-5)
    assert evoprune_state(model, processor) == []
    assert torch.equal(
        processor(images=IMAGE, text="<image>\nWhat is shown?", return_tensors="pt")["input_ids"], native["input_ids"]
    )


def test_onevision_video_frames_merged_without_pooling(onevision):
    model, processor = onevision
    frames = torch.randn(1, 3, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    evoprune.hf.patch_llava(model, processor, budget=4)
    try:
        run = processor.replace_video_token({"pixel_values_videos": frames}, 0)
        ids = processor.tokenizer("<video>\nWhat happens?".replace("<video>", run), return_tensors="pt")
        assert int((ids["input_ids"] == model.config.video_token_id).sum()) == 3 * 4 + 1
        answer, logits = greedy(model, {**ids, "pixel_values_videos": frames})
        counts = processor._get_num_multimodal_tokens(image_sizes=[(60, 100)], video_sizes=[(3, 56, 56)])
    finally:
        evoprune.hf.unpatch_llava(model, processor)
    assert (counts.num_image_tokens, counts.num_video_tokens) == ([5 * 4 + 1], [3 * 4 + 1])
    hand = by_hand(model, ids["input_ids"], model.config.video_token_id, frames[0], 4)
    with torch.no_grad():
        expected = model(inputs_embeds=hand["inputs_embeds"], attention_mask=hand["attention_mask"]).logits[0, -1]
    assert torch.allclose(logits[0, 0], expected, atol=1e-5)
    assert evoprune_state(model, processor) == []


def test_onevision_native_budget_is_a_no_op(onevision):
    model, processor = onevision
    inputs = processor(images=IMAGE, text="<image>\nWhat is shown?", return_tensors="pt")
    native = greedy(model, inputs)
    evoprune.hf.patch_llava(model, processor, budget=16)
    try:
        same = processor(images=IMAGE, text="<image>\nWhat is shown?", return_tensors="pt")
        patched = greedy(model, same)
    finally:
        evoprune.hf.unpatch_llava(model, processor)
    assert torch.equal(same["input_ids"], inputs["input_ids"])
    assert torch.equal(patched[0], native[0]) and torch.equal(patched[1], native[1])


def test_clear_errors(tiny_loaded, onevision):
    tower = tiny_loaded.model.model.vision_tower
    with pytest.raises(ValueError, match="CLIPVisionModel is not patched: evoprune.patch"):
        evoprune.schedule_of(tower)
    with pytest.raises(TypeError, match="CLIPVisionModel is not supported .* LlavaForConditionalGeneration"):
        evoprune.hf.patch_llava(tower, None, budget=32)
    model, processor = onevision
    model.config.vision_feature_layer = [-2, -1]
    try:
        with pytest.raises(ValueError, match=r"vision_feature_layer=\[-2, -1\]: only one feature layer"):
            evoprune.hf.patch_llava(model, processor, budget=4)
    finally:
        model.config.vision_feature_layer = -1
    with pytest.raises(ValueError, match="budget=17 must be an integer in \\[1, 16\\]"):
        evoprune.hf.patch_llava(model, processor, budget=17)
    assert evoprune_state(model, processor) == []
