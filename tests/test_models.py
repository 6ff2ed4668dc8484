"""The tiny model, the loader and the staged generation path."""

import pytest
import torch
from conftest import compose_config
from PIL import Image

from evoprune.harness.common.timing import STAGES
from evoprune.harness.inference.pipeline import _input_ids_with_visual_run, build_prompt, generate, truncate_at_stop
from evoprune.harness.inference.pruning import Pruner, VisualTokens
from evoprune.harness.models.loading import build_tiny_llava, resolve_dtype
from evoprune.harness.models.tiny_tokenizers import build_byte_tokenizer


class KeepFirst(Pruner):
    """Keeps the first ``budget`` tokens: a stand-in to check the pipeline honours a selection."""

    name = "keep_first"

    def select(self, tokens: VisualTokens):
        assert tokens.features.shape[:2] == tokens.projected.shape[:2] == (1, 576)
        return torch.arange(self.budget)[None]


def _image(width=320, height=240):
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((20, 20, 220), (40, 40, 120, 120))
    return image


def test_tiny_model_is_seeded_and_deterministic():
    tiny = compose_config().model.tiny
    first, _ = build_tiny_llava(tiny, seed=0)
    second, _ = build_tiny_llava(tiny, seed=0)
    other, _ = build_tiny_llava(tiny, seed=1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    pairs = zip(first.state_dict().values(), other.state_dict().values(), strict=True)
    assert not all(torch.equal(a, c) for a, c in pairs)


def test_tiny_model_has_the_real_token_grid(tiny_loaded):
    vision = tiny_loaded.model.model.vision_tower
    assert vision.config.num_hidden_layers == 24
    pixel_values = tiny_loaded.image_processor(_image(), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 336, 336)
    with torch.no_grad():
        hidden = vision(pixel_values, output_hidden_states=True).hidden_states
    assert len(hidden) == 25 and hidden[-2].shape[1] == 577  # 24x24 patches + CLS
    assert tiny_loaded.num_visual_tokens == 576


def test_images_are_padded_to_square_in_the_mean_colour(tiny_loaded):
    wide = Image.new("RGB", (336, 168), (255, 0, 0))
    pixels = tiny_loaded.image_processor(wide, return_tensors="pt").pixel_values[0]
    # top and bottom quarter are padding: the CLIP mean colour normalises to ~0
    assert pixels[:, :80].abs().max() < 0.02
    assert pixels[0, 168, 168] > 1.5  # red content in the middle


def test_byte_tokenizer_round_trips_and_keeps_image_token():
    tokenizer = build_byte_tokenizer()
    text = "USER: <image>\nWhat colour? ASSISTANT:"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<s>" + text


def test_staged_generation_matches_hf_generate(tiny_loaded):
    question = "What colour is the square?"
    result = generate(tiny_loaded, Pruner(None), _image(), question, max_new_tokens=10, until=[])
    prompt = build_prompt(tiny_loaded.prompt_template, question)
    ids = _input_ids_with_visual_run(tiny_loaded, prompt, 576)[0][None]
    pixel_values = tiny_loaded.image_processor(_image(), return_tensors="pt").pixel_values
    with torch.no_grad():
        reference = tiny_loaded.model.generate(
            input_ids=ids, pixel_values=pixel_values, max_new_tokens=10, do_sample=False
        )
    expected = tiny_loaded.tokenizer.decode(reference[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert result.text == expected
    assert result.prompt_tokens == ids.shape[1]


def test_generation_record_has_every_stage(tiny_loaded):
    result = generate(tiny_loaded, Pruner(None), _image(), "Is it red?", max_new_tokens=4, until=[])
    assert set(result.times) == {*STAGES, "ttft", "total"}
    assert all(result.times[stage] >= 0 for stage in STAGES)
    assert result.times["vision_encoder"] > 0 and result.times["prefill"] > 0
    assert result.times["ttft"] == pytest.approx(sum(result.times[s] for s in STAGES if s != "decode"))
    assert result.times["total"] >= result.times["ttft"] + result.times["decode"] - 1e-6
    assert (result.visual_tokens_before, result.visual_tokens_after) == (576, 576)
    assert result.new_tokens <= 4


def test_selection_reaches_the_llm(tiny_loaded):
    native = generate(tiny_loaded, Pruner(None), _image(), "Is it red?", max_new_tokens=1, until=[])
    pruned = generate(tiny_loaded, KeepFirst(32), _image(), "Is it red?", max_new_tokens=1, until=[])
    assert (pruned.visual_tokens_before, pruned.visual_tokens_after) == (576, 32)
    assert pruned.prompt_tokens == native.prompt_tokens - 576 + 32


def test_stop_strings_truncate(tiny_loaded):
    full = generate(tiny_loaded, Pruner(None), _image(), "Describe.", max_new_tokens=8, until=[])
    assert len(full.text) > 2
    stop = full.text[1:3]
    cut = generate(tiny_loaded, Pruner(None), _image(), "Describe.", max_new_tokens=8, until=[stop])
    assert stop not in cut.text and full.text.startswith(cut.text)


def test_several_stop_strings_cut_at_the_earliest_occurrence_not_the_first_listed():
    assert truncate_at_stop("yes. USER: no\n\nmore", ["\n\n", "USER:"]) == ("yes. ", True)
    assert truncate_at_stop("yes. USER: no\n\nmore", ["USER:", "\n\n"]) == ("yes. ", True)
    assert truncate_at_stop("a\n\nb", ["", "USER:", "\n\n"]) == ("a", True)  # an empty stop is ignored
    assert truncate_at_stop("nothing to cut", ["USER:"]) == ("nothing to cut", False)


def test_question_with_its_own_image_token_is_refused():
    with pytest.raises(ValueError, match="already contains <image>"):
        build_prompt("USER: <image>\n{prompt} ASSISTANT:", "<image> what?")


def test_dtype_names():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="dtype='fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))
