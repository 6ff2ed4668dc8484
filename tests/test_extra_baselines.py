"""The baselines the paper left out: ToMe, VisionZip, spatial pooling, random selection; and the
`reduce` hook's central contract."""

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from PIL import Image

from baselines.pooling import nearest_square_side, pool_patch_grid
from baselines.pruners import SpatialPoolingPruner, VisionZipPruner
from baselines.random_selection import random_select, sample_seed
from baselines.tome import ToMePruner
from baselines.visionzip import contextual_count, visionzip_tokens
from evoprune import schedule_of
from evoprune.harness.inference.pipeline import encode_frames, generate
from evoprune.harness.inference.pruning import Pruner, VisualTokens, build_pruner, check_reduction
from evoprune.merge import bipartite_match, merge_tokens, pair_scores
from evoprune.patching import EvoPruneOptions
from evoprune.schedules import ScheduleError

# --- ToMe ---------------------------------------------------------------------------------------


def _plain_tome_merge(x, metric, r):
    """ToMe's bipartite soft matching and size-weighted merge, stated token by token (sizes all 1)."""
    a, b = list(range(0, len(x), 2)), list(range(1, len(x), 2))
    unit = F.normalize(metric, dim=-1)
    best = {i: max(b, key=lambda j: (float(unit[i] @ unit[j]), -j)) for i in a}
    ranked = sorted(a, key=lambda i: (-float(unit[i] @ unit[best[i]]), i))
    merged_into = {j: [j] for j in b}
    for i in ranked[:r]:
        merged_into[best[i]].append(i)
    kept = {i: [i] for i in ranked[r:]} | merged_into
    return torch.stack([x[sorted(group)].mean(0) for _, group in sorted(kept.items(), key=lambda kv: min(kv[1]))])


def test_tome_matching_is_plain_bipartite_soft_matching():
    torch.manual_seed(0)
    x, metric = torch.randn(1, 12, 5), torch.randn(1, 12, 4)
    scores = pair_scores(metric, 4, None, use_div=False, sim_transform="none")
    plan = bipartite_match(scores, 4)
    size, source = torch.ones(1, 12, 1), torch.arange(12)[None]
    merged, size, _ = merge_tokens(x, size, source, plan)
    assert torch.allclose(merged[0], _plain_tome_merge(x[0], metric[0], 4), atol=1e-6)
    assert size.shape[1] == 8 and float(size.sum()) == 12.0


def test_tome_options_are_tomes_plain_matching():
    # What `evoprune.patch` receives, without a model: keys as the metric, raw cosine, no attention
    # protection or diversity term, proportional attention and spatial order by default.
    pruner = ToMePruner(64)
    assert pruner.schedule == "constant"
    options = EvoPruneOptions(**pruner.options)
    assert (options.metric, options.sim_transform, options.use_attn, options.use_div) == ("keys", "none", False, False)
    assert (options.r, options.prop_attn, options.keep_order) == (None, True, True)
    options = EvoPruneOptions(**ToMePruner(64, r=7, prop_attn=False, keep_order=False).options)
    assert (options.r, options.prop_attn, options.keep_order) == (7, False, False)


def test_tome_merges_a_constant_r_to_exactly_the_budget(tiny_loaded):
    pruner = build_pruner(compose_config("pruner=tome", "budget=64").pruner, 64)
    assert isinstance(pruner, ToMePruner)
    tower = tiny_loaded.model.model.vision_tower
    pruner.attach(tiny_loaded.model)
    try:
        assert schedule_of(tower) == [23] * 22 + [6, 0]  # ⌈512 / 23⌉ per layer up to layer -2
        options = tower._evoprune_info.options
        assert (options.use_attn, options.use_div, options.prop_attn, options.sim_transform) == (
            False,
            False,
            True,
            "none",
        )
        features, _, _ = encode_frames(tiny_loaded, torch.randn(1, 3, 336, 336))
        assert features.shape[1] == 64
    finally:
        pruner.detach(tiny_loaded.model)
    assert not hasattr(tower, "_evoprune_info")


def test_tome_r_that_cannot_reach_the_budget_names_r(tiny_loaded):
    pruner = ToMePruner(64, r=5)
    with pytest.raises(ScheduleError, match="r=5 over 23 layers merges 576 tokens only down to 461"):
        pruner.attach(tiny_loaded.model)
    pruner.detach(tiny_loaded.model)


# --- VisionZip ----------------------------------------------------------------------------------


def _plain_visionzip(hidden, cls_attention, metric, dominant, contextual):
    """The official CLIP procedure, one image, token by token: hidden (1 + N, C) with [CLS] first,
    cls_attention (N,) summed over heads, metric (1 + N, d); ``dominant`` counts [CLS]."""
    top = sorted(range(len(cls_attention)), key=lambda i: (-float(cls_attention[i]), i))[: dominant - 1]
    chosen = [0] + sorted(i + 1 for i in top)
    rest = [i for i in range(len(hidden)) if i not in chosen]
    step = max(1, len(rest) // contextual)
    targets = [rest[k] for k in range(0, len(rest), step)][:contextual]
    groups = {t: [] for t in targets}
    for i in rest:
        if i in groups:
            continue
        sims = [float(F.normalize(metric[i], dim=0) @ F.normalize(metric[t], dim=0)) for t in targets]
        groups[targets[sims.index(max(sims))]].append(i)
    contextual_tokens = [
        hidden[t] + (torch.stack([hidden[i] for i in groups[t]]).mean(0) if groups[t] else 0) for t in targets
    ]
    return torch.cat([hidden[chosen], torch.stack(contextual_tokens)])


# (1, 10): no patch token kept by score; (135, 10): dominant and contextual take all 144 patch tokens.
@pytest.mark.parametrize("dominant, contextual", [(54, 10), (108, 20), (5, 3), (12, 0), (1, 10), (135, 10)])
def test_visionzip_equals_a_plain_statement_of_the_official_selection(dominant, contextual):
    torch.manual_seed(dominant)
    hidden, metric, cls_attention = torch.randn(1 + 144, 8), torch.randn(1 + 144, 4), torch.rand(144)
    ours = visionzip_tokens(hidden[1:], hidden[:1], cls_attention, metric[1:], dominant - 1, contextual)
    if contextual:
        reference = _plain_visionzip(hidden, cls_attention, metric, dominant, contextual)
    else:
        top = cls_attention.argsort(descending=True, stable=True)[: dominant - 1].sort().values
        reference = torch.cat([hidden[:1], hidden[1:][top]])
    assert ours.shape == (dominant + contextual, 8)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_visionzip_default_split_is_the_official_one():
    assert [contextual_count(b, 1, 10 / 64) for b in (64, 128, 192)] == [10, 20, 30]
    assert contextual_count(1, 1, 10 / 64) == 0


def test_visionzip_contextual_count_leaves_room_for_the_cls_token():
    assert contextual_count(8, 1, 1.0) == 7
    assert contextual_count(8, 0, 1.0) == 8
    assert contextual_count(8, 1, 0.5) == 4


def test_visionzip_equal_scores_keep_the_lower_index():
    # 144 equal scores (an unstable sort reorders ties): the dominant tokens are the first 5 patches.
    patches = torch.randn(144, 8, generator=torch.Generator().manual_seed(0))
    tokens = visionzip_tokens(patches, patches[:0], torch.ones(144), torch.randn(144, 4), 5, 0)
    assert torch.equal(tokens, patches[:5])


@pytest.mark.parametrize("dominant, contextual", [(-1, 2), (2, -1), (145, 0), (0, 145), (100, 45)])
def test_visionzip_rejects_counts_that_do_not_fit(dominant, contextual):
    message = f"dominant={dominant} + contextual={contextual} do not fit 144 patch tokens"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        visionzip_tokens(
            torch.randn(144, 8), torch.randn(1, 8), torch.rand(144), torch.randn(144, 4), dominant, contextual
        )


def _tokens(loaded, frames=1):
    features, cls_features, layer_input = encode_frames(loaded, torch.randn(frames, 3, 336, 336))
    model = loaded.model.model
    return VisualTokens(
        features=features,
        projected=None,
        prompt="",
        layer_input=layer_input,
        vision_tower=model.vision_tower,
        feature_layer=loaded.feature_layer,
        cls_tokens=loaded.cls_tokens,
        pool_stride=None,
        embed_tokens=None,
        tokenizer=None,
        cls_features=cls_features,
    )


@torch.no_grad()
def test_visionzip_pruner_keeps_cls_first_then_dominant_then_contextual(tiny_loaded):
    tokens = _tokens(tiny_loaded)
    reduced = VisionZipPruner(64).reduce(tokens)
    assert reduced.shape == (1, 64, tokens.features.shape[-1])
    assert torch.equal(reduced[0, 0], tokens.cls_features[0, 0])
    dominant = reduced[0, 1:54]
    assert all(bool((tokens.features[0] == row).all(-1).any()) for row in dominant)  # unmerged patch tokens
    assert VisionZipPruner(64, keep_cls=False).reduce(tokens).shape == (1, 64, tokens.features.shape[-1])
    assert VisionZipPruner(576).reduce(tokens) is None  # the whole grid: native


# --- spatial pooling ----------------------------------------------------------------------------


def test_pooling_picks_the_nearest_square_grid():
    assert [nearest_square_side(b) for b in (64, 128, 192, 32, 16, 1, 2, 3)] == [8, 11, 14, 6, 4, 1, 1, 2]
    assert SpatialPoolingPruner(192).tokens_per_frame == 196


def test_pooling_averages_blocks_in_raster_order():
    features = torch.arange(2 * 36 * 3, dtype=torch.float32).view(2, 36, 3)
    pooled = pool_patch_grid(features, 2)
    grid = features.view(2, 6, 6, 3)
    assert torch.equal(pooled[:, 1], grid[:, :3, 3:].mean(dim=(1, 2)))  # row 0, column 1
    assert torch.equal(pool_patch_grid(features, 6), features)
    assert torch.equal(pool_patch_grid(features, 1), features.mean(dim=1, keepdim=True))  # budget 1: one 1x1 grid
    with pytest.raises(ValueError, match="cannot be pooled from a 6x6 grid"):
        pool_patch_grid(features, 7)
    with pytest.raises(ValueError, match="^35 patch tokens per frame do not form a square grid$"):
        pool_patch_grid(features[:, :35], 2)


# --- random -------------------------------------------------------------------------------------


def test_random_selection_is_seeded_per_sample():
    a = random_select(3, 169, 16, sample_seed(0, "mme/1"))
    assert torch.equal(a, random_select(3, 169, 16, sample_seed(0, "mme/1")))
    assert not torch.equal(a, random_select(3, 169, 16, sample_seed(0, "mme/2")))
    assert not torch.equal(a, random_select(3, 169, 16, sample_seed(1, "mme/1")))
    assert not torch.equal(a[0], a[1])  # frames draw differently
    assert all(torch.equal(row, row.unique()) for row in a) and int(a.max()) < 169
    assert sample_seed(0, "mme/1") == 3861337977977730294  # stable across processes and machines


def test_random_pruner_takes_the_run_seed_by_default():
    assert build_pruner(compose_config("pruner=random", "budget=8", "seed=7").pruner, 8).seed == 7


# --- the reduce contract ------------------------------------------------------------------------


class _Reducer(Pruner):
    def __init__(self, budget, output):
        super().__init__(budget)
        self.output = output

    def reduce(self, tokens):
        return self.output(tokens)


@pytest.mark.parametrize(
    "output, message",
    [
        (lambda t: t.features[:, :3], "returned shape (1, 3, 64); expected (frames, tokens per frame, channels)"),
        (lambda t: t.features[:, :4].long(), "returned a torch.int64 tensor; expected a floating-point tensor"),
        (lambda t: t.features[:, :4] * float("nan"), "returned non-finite values"),
    ],
)
def test_reduction_contract_is_checked_centrally(tiny_loaded, output, message):
    pruner = _Reducer(4, output)
    pruner.config_name = "mine"
    tokens = _tokens(tiny_loaded)
    with pytest.raises(ValueError, match="pruner 'mine': reduce") as err:
        check_reduction(pruner, pruner.reduce(tokens), tokens)
    assert message in str(err.value)


@torch.no_grad()
def test_a_bad_reduction_fails_the_sample_before_the_llm(tiny_loaded, monkeypatch):
    pruner = _Reducer(4, lambda t: t.features[:, :3])
    projector = tiny_loaded.model.model.multi_modal_projector
    monkeypatch.setattr(projector, "forward", lambda *a: pytest.fail("the projector ran after a bad reduction"))
    with pytest.raises(ValueError, match="expected \\(frames, tokens per frame, channels\\) = \\(1, 4, 64\\)"):
        generate(tiny_loaded, pruner, Image.new("RGB", (336, 336)), "Q?", max_new_tokens=1, until=[])
