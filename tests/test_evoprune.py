"""EvoPrune: the merge math on hand-made cases, and the patched CLIP / SigLIP towers."""

import math

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

import evoprune
from evoprune import patching
from evoprune.attention import explicit_attention
from evoprune.merge import (
    attention_importance,
    bipartite_match,
    cosine_similarity,
    local_density,
    merge_tokens,
    pair_scores,
    protection_levels,
)
from evoprune.schedules import STRATEGIES


def _clip(layers=24):
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=336,
        patch_size=14,
    )
    return CLIPVisionModel(config).eval()


def _siglip():
    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=26, num_attention_heads=2, image_size=384, patch_size=14
    )
    return SiglipVisionModel(config).eval()


@pytest.fixture(scope="module")
def clip():
    return _clip()


@pytest.fixture(scope="module")
def pixels():
    torch.manual_seed(1)
    return torch.randn(2, 3, 336, 336)


def _hidden(model, pixels):
    with torch.no_grad():
        return model(pixels, output_hidden_states=True).hidden_states


# --- the math --------------------------------------------------------------------------------


def test_importance_is_attention_received_not_a_softmax_row_mean():
    probs = torch.zeros(1, 2, 3, 3)
    probs[..., 2] = 1.0  # every query of every head attends token 2
    assert attention_importance(probs).tolist() == [[0.0, 0.0, 1.0]]


def test_local_density_by_hand():
    # two identical vectors and one orthogonal: K = 1 neighbour at squared distance 0, 0 and 2
    vectors = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    density = local_density(vectors, k=1, tau=1.0)
    assert torch.allclose(density, torch.tensor([[0.0, 0.0, 1.0 - math.exp(-2.0)]]))


def test_local_density_uses_the_euclidean_distance_and_at_most_t_minus_1_neighbours():
    # unit vectors at 0, 60 and 90 degrees: squared distances 2 - 2 cos = 1 (0-60), 2 (0-90), 2 - sqrt(3) (60-90)
    angles = torch.tensor([0.0, math.pi / 3, math.pi / 2])
    vectors = torch.stack([angles.cos(), angles.sin()], dim=-1)[None]
    squared = torch.tensor([[1.0, 2.0], [1.0, 2.0 - math.sqrt(3)], [2.0, 2.0 - math.sqrt(3)]])
    tau = 0.8
    expected = 1.0 - torch.exp(-squared / tau**2).mean(-1)  # both neighbours: K = 5 capped at T - 1 = 2
    assert torch.allclose(local_density(vectors, k=5, tau=tau), expected[None], atol=1e-6)
    nearest = 1.0 - torch.exp(-squared.min(-1).values / tau**2)
    assert torch.allclose(local_density(vectors, k=1, tau=tau), nearest[None], atol=1e-6)


def test_no_token_is_protected_when_ctr_times_t_is_below_one():
    assert protection_levels(torch.arange(3.0)[None], 0.25, r=1).tolist() == [[0.0, 0.0, 0.0]]


def test_protected_count_is_min_of_ctr_and_t_minus_2r():
    importance = torch.arange(20.0)[None]
    assert (protection_levels(importance, 0.25, r=2) > 0).sum() == 5
    assert (protection_levels(importance, 0.25, r=8) > 0).sum() == 4  # T - 2r
    assert protection_levels(importance, 0.25, r=2)[0, 15:].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def _density_by_definition(metric, k, tau):
    """d_i = 1 - mean over the k nearest other tokens of exp(-|v_i - v_j|^2 / tau^2), v normalised: by loops."""
    unit = metric / metric.norm(dim=-1, keepdim=True)
    batch, tokens, _ = metric.shape
    density = torch.zeros(batch, tokens)
    for b in range(batch):
        for i in range(tokens):
            squared = sorted(float(((unit[b, i] - unit[b, j]) ** 2).sum()) for j in range(tokens) if j != i)
            density[b, i] = 1.0 - sum(math.exp(-d / tau**2) for d in squared[:k]) / min(k, tokens - 1)
    return density


def _scores_by_definition(metric, similarity, k, tau, lambda_d, levels=None):
    """(a, b) scores from the module docstring: similarity(cos) x exp(-lambda_d (d_a + d_b)) - 4 (level_a + level_b)."""
    a, b = metric[:, ::2], metric[:, 1::2]
    cos = (a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).transpose(1, 2)
    density = _density_by_definition(metric, k, tau)
    scores = similarity(cos) * torch.exp(-lambda_d * (density[:, ::2, None] + density[:, None, 1::2]))
    if levels is not None:
        scores = scores - 4.0 * (levels[:, ::2, None] + levels[:, None, 1::2])
    return scores


def test_pair_scores_default_to_the_affine_cosine_times_the_diversity_weight_with_the_documented_knobs():
    torch.manual_seed(5)
    metric = torch.randn(2, 13, 6)
    importance = torch.rand(2, 13)
    expected = _scores_by_definition(metric, lambda cos: (1 + cos) / 2, k=5, tau=1.0, lambda_d=1.0)
    assert torch.allclose(pair_scores(metric, 2), expected, atol=1e-6)
    levels = protection_levels(importance, 0.25, 2)  # CTR 0.25 by default
    expected = _scores_by_definition(metric, lambda cos: (1 + cos) / 2, k=5, tau=1.0, lambda_d=1.0, levels=levels)
    assert torch.allclose(pair_scores(metric, 2, importance), expected, atol=1e-6)


@pytest.mark.parametrize(("sim_transform", "similarity"), [("affine", lambda c: (1 + c) / 2), ("none", lambda c: c)])
def test_pair_scores_follow_each_knob(sim_transform, similarity):
    torch.manual_seed(6)
    metric = torch.randn(1, 10, 4)
    scores = pair_scores(metric, 1, k=3, tau=0.7, lambda_d=0.4, sim_transform=sim_transform)
    assert torch.allclose(scores, _scores_by_definition(metric, similarity, k=3, tau=0.7, lambda_d=0.4), atol=1e-6)
    plain = pair_scores(metric, 1, use_div=False, sim_transform=sim_transform)
    assert torch.allclose(plain, _scores_by_definition(metric, similarity, k=3, tau=0.7, lambda_d=0.0), atol=1e-6)


def test_an_unknown_sim_transform_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"^sim_transform='cos' is not one of: affine, none$"):
        pair_scores(torch.randn(1, 4, 2), 1, sim_transform="cos")


def test_bipartite_match_accepts_r_from_0_to_the_smaller_side():
    scores = torch.randn(1, 3, 5)  # |a| = 3 < |b| = 5
    assert bipartite_match(scores, 0).src.shape == (1, 0)
    assert bipartite_match(scores, 3).unmerged.shape == (1, 0)
    for r in (-1, 4):
        with pytest.raises(ValueError, match=rf"^r={r} merges need at most min\(\|a\|, \|b\|\) = 3$"):
            bipartite_match(scores, r)


def test_ties_go_to_the_lower_index_in_matching_and_protection():
    # 40 equal scores: beyond the size below which an unstable CPU sort happens to keep ties in order
    plan = bipartite_match(torch.zeros(1, 40, 40), 5)
    assert plan.src.tolist() == [[0, 1, 2, 3, 4]] and plan.unmerged.tolist() == [list(range(5, 40))]
    levels = protection_levels(torch.ones(1, 40), 0.25, 1)
    assert levels[0, :10].tolist() == list(range(10, 0, -1)) and levels[0, 10:].eq(0).all()


def test_local_density_of_a_single_token_is_zero_and_keeps_the_input_dtype():
    assert local_density(torch.randn(2, 1, 4), k=5, tau=1.0).tolist() == [[0.0], [0.0]]
    assert local_density(torch.randn(2, 6, 4, dtype=torch.bfloat16), k=2, tau=1.0).dtype == torch.bfloat16


def test_two_tokens_are_each_others_only_neighbour():
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # squared distance 2
    assert torch.allclose(local_density(vectors, k=5, tau=1.0), torch.full((1, 2), 1.0 - math.exp(-2.0)))


def test_cosine_similarity_by_hand():
    a = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 2.0], [5.0, 0.0], [-1.0, -1.0]]])
    expected = torch.tensor([[[0.0, 1.0, -(0.5**0.5)], [0.5**0.5, 0.5**0.5, -1.0]]])
    assert torch.allclose(cosine_similarity(a, b), expected, atol=1e-6)


def _random_merge(seed: int, tokens: int, channels: int, r: int, keep_order: bool = True):
    """Random tokens of sizes 1–3 merged by r: (x, size, source, plan, merged, new size, new source)."""
    torch.manual_seed(seed)
    x = torch.randn(2, tokens, channels)
    size = torch.randint(1, 4, (2, tokens, 1)).float()
    source = torch.arange(tokens).expand(2, tokens)
    plan = bipartite_match(pair_scores(x, r), r)
    return (x, size, source, plan, *merge_tokens(x, size, source, plan, keep_order=keep_order))


def test_merge_without_keeping_order_emits_unmerged_a_tokens_then_b_tokens():
    x, size, source, plan, merged, new_size, new_source = _random_merge(7, 9, 3, 3, keep_order=False)
    for b in range(2):
        weighted, sizes = (x[b] * size[b]).clone(), size[b].clone()
        sources = source[b].clone()
        for s, d in zip(plan.src[b].tolist(), plan.dst[b].tolist(), strict=True):
            weighted[2 * d + 1] += weighted[2 * s]
            sizes[2 * d + 1] += sizes[2 * s]
            sources[2 * d + 1] = min(sources[2 * d + 1], sources[2 * s])
        order = [2 * u for u in plan.unmerged[b].tolist()] + list(range(1, 9, 2))
        assert torch.allclose(merged[b], weighted[order] / sizes[order], atol=1e-6)
        assert torch.equal(new_size[b], sizes[order]) and new_source[b].tolist() == sources[order].tolist()
    assert new_source.dtype == source.dtype


def test_most_similar_pair_merges_first():
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [1.0, 0.02]]])
    plan = bipartite_match(pair_scores(metric, 1, use_div=False), 1)
    # a = tokens 0, 2; b = tokens 1, 3; token 0 and token 3 are the closest pair
    assert plan.src.tolist() == [[0]] and plan.dst.tolist() == [[1]]


@pytest.mark.parametrize("sim_transform", ["affine", "none"])
@pytest.mark.parametrize("important", [4, 5])
def test_overwhelmingly_attended_token_is_never_merged(sim_transform, important):
    torch.manual_seed(3)
    metric = torch.randn(1, 16, 8)
    metric[0, important] = metric[0, important + 2]  # its best partner is a duplicate...
    metric[0, :, 0] -= 10.0  # ...and every similarity is negative
    importance = torch.full((1, 16), 0.01)
    importance[0, important] = 10.0
    for r in range(1, 8):
        plan = bipartite_match(pair_scores(metric, r, importance, ctr=0.25, sim_transform=sim_transform), r)
        merged_away = [2 * s for s in plan.src.tolist()[0]]
        receiving = [2 * d + 1 for d in plan.dst.tolist()[0]]
        assert important not in merged_away and important not in receiving


def test_merge_conserves_mass_and_keeps_spatial_order():
    x, size, _, _, merged, new_size, new_source = _random_merge(4, 12, 5, 4)
    assert merged.shape == (2, 8, 5)
    assert torch.allclose((merged * new_size).sum(1), (x * size).sum(1), atol=1e-5)
    assert torch.equal(new_size.sum(1), size.sum(1))
    assert (new_source.diff(dim=-1) > 0).all()


# --- the patched towers ----------------------------------------------------------------------


def test_budget_equal_to_native_is_an_exact_no_op(clip, pixels):
    reference = _hidden(clip, pixels)
    evoprune.patch(clip, 576)
    try:
        patched = _hidden(clip, pixels)
    finally:
        evoprune.unpatch(clip)
    assert all(torch.equal(a, b) for a, b in zip(reference, patched, strict=True))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("budget", [16, 32, 64, 128])
def test_feature_layer_holds_exactly_budget_plus_cls(clip, strategy, budget):
    pixels = torch.randn(1, 3, 336, 336)
    evoprune.patch(clip, budget, schedule=strategy)
    try:
        hidden = _hidden(clip, pixels)
    finally:
        evoprune.unpatch(clip)
    assert hidden[-2].shape[1] == budget + 1


def test_siglip_reaches_the_per_frame_budget():
    model = _siglip()
    evoprune.patch(model, 16, feature_layer=-1)
    assert _hidden(model, torch.randn(2, 3, 384, 384))[-1].shape[1] == 16


def test_cls_is_never_merged(clip, pixels, monkeypatch):
    seen = []
    original = patching.merge_tokens

    def spy(x, size, source, plan, keep_order=True):
        seen.append(x.shape[1])
        return original(x, size, source, plan, keep_order)

    monkeypatch.setattr(patching, "merge_tokens", spy)
    evoprune.patch(clip, 32)
    try:
        _hidden(clip, pixels)
        schedule = evoprune.schedule_of(clip)
    finally:
        evoprune.unpatch(clip)
    entering = [576 - sum(schedule[:i]) for i, r in enumerate(schedule) if r > 0]
    assert seen == entering  # merging only ever sees the patch tokens

    # a CLS identical to every patch token still passes through a merge untouched
    info = patching._PatchInfo(budget=4, schedule=[], options=patching.EvoPruneOptions(), prefix_tokens=1)
    x = torch.ones(1, 9, 4)
    x[0, 0] *= 7.0
    metric = torch.ones(1, 9, 4)
    out = patching._merge(info, x, metric, importance=None, r=4)
    assert out.shape == (1, 5, 4) and torch.equal(out[0, 0], x[0, 0])
    assert info.runtime.size.sum() == 8


def test_batch_of_two_equals_two_single_runs(clip, pixels):
    evoprune.patch(clip, 32)
    try:
        batch = _hidden(clip, pixels)[-2]
        singles = torch.cat([_hidden(clip, pixels[i : i + 1])[-2] for i in range(2)])
    finally:
        evoprune.unpatch(clip)
    assert torch.allclose(batch, singles, atol=1e-5)


def test_unpatch_restores_the_original_model(clip, pixels):
    reference = _hidden(clip, pixels)
    evoprune.patch(clip, 64, schedule="mean", prop_attn=True)
    _hidden(clip, pixels)
    evoprune.unpatch(clip)
    assert all(torch.equal(a, b) for a, b in zip(reference, _hidden(clip, pixels), strict=True))
    assert "forward" not in clip.__dict__
    assert all("forward" not in layer.__dict__ for layer in clip.encoder.layers)


def test_attention_probabilities_only_at_merge_layers(clip, pixels, monkeypatch):
    calls = []
    original = patching._attention

    def spy(attn, hidden, bias, need_probs):
        calls.append(need_probs)
        return original(attn, hidden, bias, need_probs)

    monkeypatch.setattr(patching, "_attention", spy)
    evoprune.patch(clip, 64, schedule="skip")
    try:
        _hidden(clip, pixels)
        merge_layers = sum(r > 0 for r in evoprune.schedule_of(clip))
    finally:
        evoprune.unpatch(clip)
    assert calls == [True] * merge_layers
    evoprune.patch(clip, 64, schedule="skip", use_attn=False)
    try:
        calls.clear()
        _hidden(clip, pixels)
    finally:
        evoprune.unpatch(clip)
    assert calls == [False] * merge_layers


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"schedule": "zigzag"}, ValueError, "schedule='zigzag' is not one of"),
        ({"schedule": "first", "n": 0}, ValueError, "N in"),
        ({"schedule": "last", "n": 24}, ValueError, "N in"),
        ({"schedule": "increasing", "alpha": 0.0}, ValueError, "alpha > 0"),
        ({"ctr": 1.0}, ValueError, "ctr=1.0"),
        ({"ctr": -0.1}, ValueError, "ctr=-0.1"),
        ({"k": 0}, ValueError, "k=0"),
        ({"tau": 0.0}, ValueError, "tau=0.0"),
        ({"metric": "values"}, ValueError, "metric='values'"),
        ({"budget": 577}, ValueError, r"budget=577 must be an integer in \[1, 576\]"),
    ],
)
def test_bad_options_name_the_field(clip, kwargs, error, message):
    arguments = {"budget": 64, **kwargs}
    with pytest.raises(error, match=message):
        evoprune.patch(clip, **arguments)
    assert "forward" not in clip.__dict__


def test_unsupported_model_names_the_supported_ones():
    with pytest.raises(TypeError, match="CLIPVisionModel, SiglipVisionModel"):
        evoprune.patch(torch.nn.Linear(2, 2), 4)


def test_proportional_attention_equals_attending_duplicated_tokens():
    """log(size) on a key's logit is the same as that key appearing size times."""
    torch.manual_seed(5)
    attn = _clip(layers=1).encoder.layers[0].self_attn
    tokens = torch.randn(1, 5, 32)
    duplicated = torch.cat([tokens, tokens[:, 2:3]], dim=1)  # token 2 twice
    bias = torch.zeros(1, 1, 1, 5)
    bias[..., 2] = math.log(2.0)
    with torch.no_grad():
        weighted, _, importance = patching._attention(attn, tokens, bias, need_importance=True)
        reference, _, duplicated_importance = patching._attention(attn, duplicated, None, need_importance=True)
        fused, _, _ = patching._attention(attn, tokens, bias, need_importance=False)
    assert torch.allclose(weighted, reference[:, :5], atol=1e-5)
    assert torch.allclose(fused, weighted, atol=1e-5)
    heads = (1, 5, attn.num_heads, attn.head_dim)
    q, k, v = (proj(tokens).view(heads).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    _, expected = explicit_attention(q, k, v, attn.scale, bias)  # the importance the size bias implies
    assert torch.allclose(importance, expected, atol=1e-6) and torch.allclose(importance.sum(-1), torch.ones(1))
    assert importance[0, 2] > duplicated_importance[0, 2]  # a key standing for two receives more than one copy


def test_drop_in_on_an_hf_llava_generate(tiny_loaded):
    """The README's two lines on a whole LLaVA: HF's own generate matches the harness pipeline."""
    from PIL import Image

    from evoprune.harness.inference.pipeline import _input_ids_with_visual_run, build_prompt, generate
    from evoprune.harness.inference.pruning import Pruner

    image = Image.new("RGB", (300, 200), (10, 200, 30))
    prompt = build_prompt(tiny_loaded.prompt_template, "What is shown?")
    tower = tiny_loaded.model.model.vision_tower
    evoprune.patch(tower, 32)
    try:
        ids = _input_ids_with_visual_run(tiny_loaded, prompt, 32)[0][None]
        pixels = tiny_loaded.image_processor(image, return_tensors="pt").pixel_values
        with torch.no_grad():
            out = tiny_loaded.model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, do_sample=False)
        ours = generate(tiny_loaded, Pruner(None), image, "What is shown?", max_new_tokens=6, until=[])
    finally:
        evoprune.unpatch(tower)
    assert ours.visual_tokens_after == 32
    assert tiny_loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip() == ours.text


def test_the_method_patches_a_tower_with_torch_and_transformers_alone(tmp_path):
    """`import evoprune; evoprune.patch(...)` in a process where the harness's packages do not import."""
    import os
    import subprocess
    import sys

    absent = ("lmms_eval", "hydra", "omegaconf", "datasets", "pandas", "decord", "av", "matplotlib")
    (tmp_path / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({absent!r}))\n")
    program = (
        "import torch, evoprune\n"
        "from transformers import CLIPVisionConfig, CLIPVisionModel\n"
        "config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,"
        " image_size=56, patch_size=14)\n"
        "model = CLIPVisionModel(config).eval()\n"
        "evoprune.patch(model, budget=8, feature_layer=-1)\n"
        "with torch.no_grad():\n"
        "    out = model(torch.randn(1, 3, 56, 56), output_hidden_states=True)\n"
        "print(out.hidden_states[-1].shape[1], evoprune.schedule_of(model))\n"
        "import sys; print(sorted(name for name in sys.modules if name.startswith('evoprune.harness')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, *_, loaded = done.stdout.strip().splitlines()
    assert tokens.split()[0] == "9" and loaded == "[]"  # CLS + 8 tokens; nothing of the harness imported
