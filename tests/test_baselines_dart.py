"""DART selection: hand-worked cases, properties on random inputs, plainly-written loop references (the
L1 visiting order, and the official code's procedure with its Python-set visiting order)."""

import functools
import math
import re

import pytest
import torch

from baselines.dart import dart_select

# The L1 visiting order (image pivots, then text pivots, each by decreasing key L1 norm).
dart_l1 = functools.partial(dart_select, pivot_order="l1")


def _angles(*degrees):
    """Unit 2-D hidden states at the given angles."""
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def _keys(*l1_norms):
    """1-D keys whose L1 norms are the given values."""
    return torch.tensor(l1_norms, dtype=torch.float32).unsqueeze(1)


def _random(seed, num_tokens=48, num_text=7, key_dim=12, hidden_dim=10):
    generator = torch.Generator().manual_seed(seed)
    return {
        "image_keys": torch.randn(num_tokens, key_dim, generator=generator),
        "image_hidden": torch.randn(num_tokens, hidden_dim, generator=generator),
        "text_keys": torch.randn(num_text, key_dim, generator=generator),
        "text_hidden": torch.randn(num_text, hidden_dim, generator=generator),
    }


def _reference(quotas, image_keys, image_hidden, text_keys=None, text_hidden=None, num_pivots=4, num_text_pivots=4):
    """Loops: pivots by L1 rank (image then text), each taking its quota of the least similar unkept tokens."""

    def ranked_by_l1(keys, count):
        norms = [sum(abs(v) for v in row) for row in keys]
        return sorted(range(len(norms)), key=lambda i: (-norms[i], i))[:count]

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm_a = math.sqrt(sum(x * x for x in a))
        norm_b = math.sqrt(sum(y * y for y in b))
        return dot / (norm_a * norm_b)

    image_keys, image_hidden = image_keys.tolist(), image_hidden.tolist()
    image_pivots = ranked_by_l1(image_keys, num_pivots)
    pivots = [image_hidden[i] for i in image_pivots]
    if text_keys is not None:
        pivots += [text_hidden.tolist()[i] for i in ranked_by_l1(text_keys.tolist(), num_text_pivots)]
    kept = set(image_pivots)
    for pivot, quota in zip(pivots, quotas, strict=True):
        candidates = [i for i in range(len(image_hidden)) if i not in kept]
        candidates.sort(key=lambda i: (cosine(pivot, image_hidden[i]), i))
        kept.update(candidates[:quota])
    return sorted(kept)


def _even_quotas(total, num_pivots):
    return [total // num_pivots + (i < total % num_pivots) for i in range(num_pivots)]


# Hand-worked cases.


def test_pivots_are_the_largest_l1_keys():
    keys = torch.tensor([[1.0, -1.0], [-3.0, 0.5], [0.1, 0.1], [2.0, 2.5], [0.0, -4.0], [1.0, 0.0]])
    hidden = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    # L1 norms: 2, 3.5, 0.2, 4.5, 4, 1.
    assert dart_l1(keys, hidden, budget=2, num_pivots=2).tolist() == [3, 4]
    assert dart_l1(keys, hidden, budget=3, num_pivots=3).tolist() == [1, 3, 4]


def test_one_pivot_keeps_the_tokens_least_similar_to_it():
    hidden = _angles(0, 10, 90, 180, 135, 45)
    keys = _keys(5, 1, 1, 1, 1, 1)  # token 0 is the pivot
    assert dart_l1(keys, hidden, budget=3, num_pivots=1).tolist() == [0, 3, 4]
    assert dart_l1(keys, hidden, budget=4, num_pivots=1).tolist() == [0, 2, 3, 4]


def test_duplicates_of_the_pivot_are_dropped_first():
    hidden = _angles(30, 30, 30, 60, 120, 200)
    keys = _keys(1, 9, 1, 1, 1, 1)  # token 1 is the pivot; 0 and 2 duplicate it
    assert dart_l1(keys, hidden, budget=4, num_pivots=1).tolist() == [1, 3, 4, 5]
    # One duplicate must be kept: equal similarity goes to the lower index.
    assert dart_l1(keys, hidden, budget=5, num_pivots=1).tolist() == [0, 1, 3, 4, 5]


def test_later_pivots_pick_among_tokens_not_yet_kept():
    # Pivots 0 (0 deg) then 1 (20 deg). Both like token 2 (185 deg) least; pivot 0 takes it, so pivot 1
    # takes its next choice, 4 (230 deg), not 3 (160 deg).
    hidden = _angles(0, 20, 185, 160, 230, 90)
    keys = _keys(9, 8, 1, 1, 1, 1)
    assert dart_l1(keys, hidden, budget=4, num_pivots=2).tolist() == [0, 1, 2, 4]


def test_the_remainder_goes_to_the_pivot_with_the_larger_key_norm():
    # Pivots A = 0 and B = 1. A ranks 2, 3, 4, 5 (least similar first); B ranks 4, 5, 2, 3.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [-1.0, 0.9], [0.5, -1.0], [0.9, -1.0]])
    # A first: A takes 2 and 3, B takes 4.
    assert dart_l1(_keys(9, 8, 1, 1, 1, 1), hidden, budget=5, num_pivots=2).tolist() == [0, 1, 2, 3, 4]
    # B first: B takes 4 and 5, A takes 2.
    assert dart_l1(_keys(8, 9, 1, 1, 1, 1), hidden, budget=5, num_pivots=2).tolist() == [0, 1, 2, 4, 5]
    # One pick each.
    assert dart_l1(_keys(8, 9, 1, 1, 1, 1), hidden, budget=4, num_pivots=2).tolist() == [0, 1, 2, 4]


def test_equal_similarities_go_to_the_lower_index():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [1.0, 0.0]])
    # Tokens 1, 2 and 3 are all orthogonal to the pivot 0; token 4 duplicates it.
    assert dart_l1(_keys(5, 1, 1, 1, 1), hidden, budget=3, num_pivots=1).tolist() == [0, 1, 2]


def test_text_pivots_pick_image_tokens_but_are_not_kept():
    image_hidden = _angles(0, 45, 90, 180, 200)
    image_keys = _keys(9, 1, 1, 1, 1)  # image pivot 0
    text_keys = _keys(1, 7)  # text pivot 1
    text_hidden = _angles(0, 270)
    # Image pivot takes 3 (180 deg); the text pivot (270 deg) then takes 2 (90 deg, opposite to it).
    kept = dart_l1(image_keys, image_hidden, 3, 1, text_keys, text_hidden, num_text_pivots=1)
    assert kept.tolist() == [0, 2, 3]
    # Without the text pivot the image pivot takes both picks: 3 then 4.
    assert dart_l1(image_keys, image_hidden, 3, num_pivots=1).tolist() == [0, 3, 4]


def test_few_text_tokens_all_become_pivots():
    data = _random(1, num_text=2)
    kept = dart_l1(**data, budget=20, num_pivots=4, num_text_pivots=4)
    expected = _reference(_even_quotas(16, 6), **data, num_text_pivots=2)
    assert kept.tolist() == expected


def test_equal_key_norms_go_to_the_lower_index():
    hidden = _angles(0, 90, 180, 270)
    assert dart_l1(_keys(2, 2, 2, 2), hidden, budget=1, num_pivots=1).tolist() == [0]
    assert dart_l1(_keys(1, 2, 2, 2), hidden, budget=2, num_pivots=2).tolist() == [1, 2]


def test_ties_among_many_tokens_go_to_the_lower_index():
    # 20 tokens (an unstable sort reorders equal values from 17 entries on). Equal key norms: the
    # pivots are the first ones. Equal similarities (tokens 1 … 19 all orthogonal to the pivot 0):
    # the picks are the first ones.
    hidden = torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 19)
    assert dart_l1(_keys(*[3] * 20), hidden, budget=5, num_pivots=5).tolist() == [0, 1, 2, 3, 4]
    assert dart_l1(_keys(9, *[1] * 19), hidden, budget=6, num_pivots=1).tolist() == [0, 1, 2, 3, 4, 5]


def test_similarity_clamps_each_norm_at_1e_8_as_the_official_cosine():
    # Token 1 points away from the pivot 0 but has norm 1e-10: F.cosine_similarity (eps 1e-8, the
    # official) gives it -0.01, so the least similar token is 2 (-0.5), not token 1.
    hidden = torch.tensor([[1.0, 0.0], [-1e-10, 0.0], [-0.5, 0.866], [0.0, 1.0], [1.0, 0.1]])
    official = torch.nn.functional.cosine_similarity(hidden[:1], hidden, dim=-1)
    assert official[1:].argmin().item() + 1 == 2
    assert dart_l1(_keys(9, 1, 1, 1, 1), hidden, budget=2, num_pivots=1).tolist() == [0, 2]


def test_half_precision_key_norms_are_summed_beyond_the_float16_range():
    # L1 norms 16 · 4100 and 16 · 4200 both overflow float16 (max 65504); in float32 token 3 is larger.
    keys = torch.ones(6, 16, dtype=torch.float16)
    keys[0], keys[3] = 4100.0, 4200.0
    hidden = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).half()
    for pivot_order in ("official", "l1"):
        kept = dart_select(keys, hidden, budget=1, num_pivots=1, pivot_order=pivot_order)
        assert kept.tolist() == [3]
        assert torch.equal(kept, dart_select(keys.float(), hidden.float(), 1, 1, pivot_order=pivot_order))


def test_text_pivot_count_does_not_depend_on_the_key_dimension():
    # Keys of dimension 2 (fewer than the 4 text pivots): still 4 text pivots.
    data = _random(2, key_dim=2)
    assert dart_l1(**data, budget=20).tolist() == _reference(_even_quotas(16, 8), **data)
    assert len(dart_select(**data, budget=20, count="official")) == 4 + 8 * 2


def test_zero_text_pivots_is_the_image_only_selection():
    data = _random(3)
    image_only = {k: v for k, v in data.items() if k.startswith("image")}
    for pivot_order in ("official", "l1"):
        kept = dart_select(**data, budget=20, num_text_pivots=0, pivot_order=pivot_order, image_start=35)
        assert kept.tolist() == dart_select(**image_only, budget=20, pivot_order=pivot_order, image_start=35).tolist()


# Properties on random inputs.


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("budget", [4, 5, 11, 20, 36, 47, 48])
@pytest.mark.parametrize("with_text", [True, False])
@pytest.mark.parametrize("pivot_order", ["official", "l1"])
def test_properties(seed, budget, with_text, pivot_order):
    data = _random(seed)
    if not with_text:
        data = {k: v for k, v in data.items() if k.startswith("image")}
    select = functools.partial(dart_select, pivot_order=pivot_order, image_start=seed * 17)
    kept = select(**data, budget=budget)
    assert kept.dtype == torch.int64
    assert len(kept) == budget
    assert kept.tolist() == sorted(set(kept.tolist()))
    assert 0 <= kept.min() and kept.max() < 48
    assert torch.equal(kept, select(**data, budget=budget))
    pivots = torch.linalg.vector_norm(data["image_keys"], ord=1, dim=-1).topk(4).indices
    assert set(pivots.tolist()) <= set(kept.tolist())


@pytest.mark.parametrize("pivot_order", ["official", "l1"])
def test_full_budget_keeps_everything(pivot_order):
    data = _random(3)
    assert dart_select(**data, budget=48, pivot_order=pivot_order).tolist() == list(range(48))


@pytest.mark.parametrize("pivot_order", ["official", "l1"])
def test_half_precision_matches_its_float32_upcast(pivot_order):
    data = {k: v.half() for k, v in _random(4).items()}
    upcast = {k: v.float() for k, v in data.items()}
    select = functools.partial(dart_select, budget=17, pivot_order=pivot_order, image_start=35)
    assert torch.equal(select(**data), select(**upcast))


# Agreement with the loop reference.


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget", [4, 9, 13, 28, 44])
def test_matches_loop_reference(seed, budget):
    data = _random(seed + 10)
    kept = dart_l1(**data, budget=budget)
    assert kept.tolist() == _reference(_even_quotas(budget - 4, 8), **data)
    image_only = {k: v for k, v in data.items() if k.startswith("image")}
    expected = _reference(_even_quotas(budget - 4, 4), **image_only)
    assert dart_l1(**image_only, budget=budget).tolist() == expected


def test_official_count_budget_gives_the_official_per_pivot_quota():
    """Official max_num_trunction 8q keeps 4 + 8q tokens, q per pivot; budget 4 + 8q does the same."""
    data = _random(7, num_tokens=160, num_text=12)
    kept = dart_l1(**data, budget=4 + 8 * 16)
    assert kept.tolist() == _reference([128 // 8] * 8, **data)


# The official visiting order and kept count.


def _official(quotas, image_keys, image_hidden, text_keys, text_hidden, image_start, num_pivots=4, num_text_pivots=4):
    """`get_retained_image_token` as plain Python: pivots at absolute positions (image start + index,
    text right after the image), visited in the iteration order of the Python set built from the image
    pivots' then the text pivots' positions (each list in decreasing L1 order, as `topk` returns it); the
    visit-th pivot takes quotas[visit] of the still-valid image tokens least similar to it (ties: lower
    position); text pivots are dropped at the end."""

    def top_l1(keys, count):
        norms = [sum(abs(v) for v in row) for row in keys]
        return sorted(range(len(norms)), key=lambda i: (-norms[i], i))[:count]

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    image_keys, image_hidden = image_keys.tolist(), image_hidden.tolist()
    text_keys, text_hidden = text_keys.tolist(), text_hidden.tolist()
    text_start = image_start + len(image_keys)
    state = {image_start + i: row for i, row in enumerate(image_hidden)}
    state.update({text_start + i: row for i, row in enumerate(text_hidden)})
    image_indices = [image_start + i for i in top_l1(image_keys, num_pivots)]
    query_indices = [text_start + i for i in top_l1(text_keys, num_text_pivots)]
    indices_set = set(image_indices + query_indices)
    valid = set(range(image_start, text_start)) - set(image_indices)
    for visit, item in enumerate(list(indices_set)):
        ranked = sorted(valid, key=lambda p: (cosine(state[item], state[p]), p))
        chosen = ranked[: quotas[visit]]
        indices_set.update(chosen)
        valid.difference_update(chosen)
    indices_set.difference_update(query_indices)
    return sorted(p - image_start for p in indices_set)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("image_start", [0, 5, 35, 61, 600])
@pytest.mark.parametrize("budget", [4, 13, 28, 44])
def test_official_order_matches_the_official_procedure(seed, image_start, budget):
    data = _random(seed + 20, num_text=9)
    kept = dart_select(**data, budget=budget, image_start=image_start)
    assert kept.tolist() == _official(_even_quotas(budget - 4, 8), **data, image_start=image_start)
    official = dart_select(**data, budget=budget, image_start=image_start, count="official")
    assert official.tolist() == _official([budget // 8] * 8, **data, image_start=image_start)


def test_official_order_reads_the_positions_not_the_l1_rank():
    # One image pivot (token 5, at 0 deg) and one text pivot (20 deg). Both like token 1 (185 deg) least;
    # whichever goes first takes it, and the other takes its next choice: 2 (160 deg) for the image
    # pivot, 3 (230 deg) for the text pivot. A two-int set iterates by position mod 8.
    image_hidden = _angles(90, 185, 160, 230, 45, 0)
    image_keys = _keys(1, 1, 1, 1, 1, 9)
    text = {"text_keys": _keys(1), "text_hidden": _angles(20), "num_text_pivots": 1}
    select = functools.partial(dart_select, image_keys, image_hidden, 3, 1, **text)
    # image_start 0: positions 5 (image) and 6 (text): image first.
    assert list({5, 6}) == [5, 6]
    assert select(image_start=0).tolist() == [1, 3, 5]
    # image_start 2: positions 7 (image) and 8 (text, slot 0): text first.
    assert list({7, 8}) == [8, 7]
    assert select(image_start=2).tolist() == [1, 2, 5]
    # text_start moves the text pivot alone: positions 5 and 8.
    assert select(image_start=0, text_start=8).tolist() == [1, 2, 5]
    # The L1 order visits the image pivots first wherever the image starts.
    assert select(image_start=2, pivot_order="l1").tolist() == [1, 3, 5]


def test_official_order_places_the_image_at_position_0_by_default():
    # As above with 7 image tokens, the image pivot last (token 6, at 0 deg). Image at 0: positions 6
    # (image) and 7 (text): image first, it takes 1 and the text pivot 3. Image at 1: 7 and 8 iterate
    # text first, and the image pivot takes 2.
    image_hidden = _angles(90, 185, 160, 230, 45, 50, 0)
    text = {"text_keys": _keys(1), "text_hidden": _angles(20), "num_text_pivots": 1}
    select = functools.partial(dart_select, _keys(1, 1, 1, 1, 1, 1, 9), image_hidden, 3, 1, **text)
    assert list({6, 7}) == [6, 7] and list({7, 8}) == [8, 7]
    assert select(image_start=0).tolist() == [1, 3, 6]
    assert select(image_start=1).tolist() == [1, 2, 6]
    assert select().tolist() == [1, 3, 6]


def test_the_two_orders_differ_on_most_random_trials():
    """At LLaVA-1.5's shape (576 image tokens, image at 35, official count at max_num_trunction 128)."""
    differ = 0
    for seed in range(20):
        data = _random(100 + seed, num_tokens=576, num_text=40, key_dim=16, hidden_dim=16)
        official = dart_select(**data, budget=128, count="official", image_start=35)
        by_l1 = dart_select(**data, budget=128, count="official", image_start=35, pivot_order="l1")
        assert len(official) == len(by_l1) == 132
        differ += official.tolist() != by_l1.tolist()
    assert differ >= 15


@pytest.mark.parametrize(("budget", "kept"), [(128, 132), (31, 28), (8, 12), (7, 4), (4, 4), (64, 68)])
@pytest.mark.parametrize("pivot_order", ["official", "l1"])
def test_official_count_keeps_4_plus_8_floor_budget_over_8(budget, kept, pivot_order):
    data = _random(5, num_tokens=576, num_text=12)
    chosen = dart_select(**data, budget=budget, count="official", pivot_order=pivot_order, image_start=35)
    assert len(chosen) == kept == 4 + 8 * (budget // 8)
    assert len(dart_select(**data, budget=budget, pivot_order=pivot_order, image_start=35)) == budget


def test_official_count_with_fewer_pivots_divides_by_the_pivots_there_are():
    data = _random(6, num_text=2)  # 4 image pivots + 2 text pivots
    assert len(dart_select(**data, budget=20, count="official")) == 4 + 6 * 3
    image_only = {k: v for k, v in data.items() if k.startswith("image")}
    assert len(dart_select(**image_only, budget=20, count="official")) == 4 + 4 * 5


def test_official_count_above_the_tokens_is_rejected():
    data = _random(0)  # 48 image tokens: budget 48 would keep 4 + 48
    with pytest.raises(ValueError, match=r"52 image tokens at budget=48, more than the 48"):
        dart_select(**data, budget=48, count="official")
    assert len(dart_select(**data, budget=47, count="official")) == 44
    # Keeping exactly every image token is allowed: 44 tokens, budget 40 keeps 4 + 8 * 5 = 44.
    assert dart_select(**_random(0, num_tokens=44), budget=40, count="official").tolist() == list(range(44))


def test_prefill_passes_the_sequence_positions(tiny_loaded, monkeypatch):
    import baselines.dart_prefill as prefill_module

    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return dart_select(*args, **kwargs)

    monkeypatch.setattr(prefill_module, "dart_select", recording)
    llm = tiny_loaded.model.model.language_model
    generator = torch.Generator().manual_seed(0)
    embeds, mask = torch.randn(1, 40, 64, generator=generator), torch.zeros(40, dtype=torch.bool)
    mask[5:25] = True
    with torch.no_grad():
        _, kept = prefill_module.dart_prefill(llm, embeds, mask, budget=8, count="official")
        _, kept_exact = prefill_module.dart_prefill(llm, embeds, mask, budget=9, pivot_order="l1")
    assert (kept, kept_exact) == (12, 9)
    assert [(c["image_start"], c["text_start"], c["pivot_order"], c["count"]) for c in calls] == [
        (5, 25, "official", "official"),
        (5, 25, "l1", "exact"),
    ]


def test_prefill_reads_the_span_around_unmarked_positions(tiny_loaded, monkeypatch):
    """Newline-like positions (not marked) inside and after the image: the image starts at the first marked
    position, the text after the last, and the selection sees the marked positions only, in order."""
    import baselines.dart_prefill as prefill_module

    calls = []

    def recording(image_keys, image_hidden, budget, **kwargs):
        calls.append((image_keys.shape[0], kwargs["image_start"], kwargs["text_start"]))
        return dart_select(image_keys, image_hidden, budget, **kwargs)

    monkeypatch.setattr(prefill_module, "dart_select", recording)
    llm = tiny_loaded.model.model.language_model
    embeds = torch.randn(1, 40, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(40, dtype=torch.bool)
    mask[6:24] = True
    mask[[6, 12, 23]] = False  # a leading, an inner and a trailing unmarked position
    with torch.no_grad():
        out, kept = prefill_module.dart_prefill(llm, embeds, mask, budget=8)
    assert calls == [(15, 7, 23)] and kept == 8
    assert out.cache.layers[-1].keys.shape[2] == 40 - 15 + 8  # the unmarked positions all kept
    with pytest.raises(ValueError, match="marks none"):
        prefill_module.dart_prefill(llm, embeds, torch.zeros(40, dtype=torch.bool), budget=8)


def test_true_positions_are_the_nonzero_entries_in_order():
    from evoprune.indexing import true_positions

    mask = torch.rand(200, generator=torch.Generator().manual_seed(0)) < 0.3
    assert torch.equal(true_positions(mask, int(mask.sum())), mask.nonzero().flatten())
    assert true_positions(torch.zeros(5, dtype=torch.bool), 0).tolist() == []


# Bad input.


def test_budget_below_the_pivots_is_rejected():
    data = _random(0)
    with pytest.raises(ValueError, match=r"budget=3.*num_pivots=4"):
        dart_select(**data, budget=3)


@pytest.mark.parametrize("budget", [49, 100])
def test_budget_above_the_tokens_is_rejected(budget):
    with pytest.raises(ValueError, match="budget"):
        dart_select(**_random(0), budget=budget)


@pytest.mark.parametrize("budget", [8.0, True, "8"])
def test_non_integer_budget_is_rejected(budget):
    with pytest.raises(TypeError):
        dart_select(**_random(0), budget=budget)


@pytest.mark.parametrize("budget", [True, 8.0, "8"])
def test_a_budget_that_is_not_an_integer_is_rejected_by_name(budget):
    with pytest.raises(TypeError, match=f"^budget must be an int, got {re.escape(repr(budget))}$"):
        dart_select(**_random(0), budget=budget)


@pytest.mark.parametrize(
    ("keys_shape", "hidden_shape"), [((48,), (48, 10)), ((48, 12), (48, 10, 1)), ((48, 12, 1), (48, 10))]
)
def test_image_tensors_that_are_not_2d_are_rejected(keys_shape, hidden_shape):
    message = (
        f"image_keys (N, Dk) and image_hidden (N, C) must be 2-D with the same N, got {keys_shape} and {hidden_shape}"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        dart_select(torch.randn(keys_shape), torch.randn(hidden_shape), budget=8)


@pytest.mark.parametrize(
    ("keys_shape", "hidden_shape"),
    [((0, 12), (0, 10)), ((7, 12), (6, 10)), ((7, 12), (7, 10, 1)), ((7, 12, 1), (7, 10)), ((7, 12, 1), (7, 10, 1))],
)
def test_text_tensors_that_are_not_2d_with_the_same_t_are_rejected(keys_shape, hidden_shape):
    data = _random(0)
    data["text_keys"], data["text_hidden"] = torch.randn(keys_shape), torch.randn(hidden_shape)
    shapes = f"got {keys_shape} and {hidden_shape}"
    message = f"text_keys (T, 12) and text_hidden (T, 10) must be 2-D with the same T >= 1, {shapes}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        dart_select(**data, budget=8)


def test_mismatched_shapes_are_rejected():
    data = _random(0)
    with pytest.raises(ValueError, match="image_keys"):
        dart_select(data["image_keys"][:-1], data["image_hidden"], budget=8)
    with pytest.raises(ValueError, match="^text_keys and text_hidden must be given together$"):
        dart_select(data["image_keys"], data["image_hidden"], 8, text_keys=data["text_keys"])
    with pytest.raises(ValueError, match="text_keys"):
        dart_select(data["image_keys"], data["image_hidden"], 8, 4, data["text_keys"][:, :3], data["text_hidden"])
    with pytest.raises(ValueError, match="num_pivots"):
        dart_select(data["image_keys"], data["image_hidden"], budget=8, num_pivots=0)
    with pytest.raises(ValueError, match=r"num_text_pivots >= 0, got 4 and -1$"):
        dart_select(**data, budget=8, num_text_pivots=-1)


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("pivot_order", "L1", "'official', 'l1'"),
        ("pivot_order", None, "'official', 'l1'"),
        ("count", "all", "'exact', 'official'"),
    ],
)
def test_bad_options_are_rejected_naming_the_accepted_values(option, value, accepted):
    from baselines.pruners import DARTPruner

    message = f"{option}={value!r} is not one of: {accepted}"
    with pytest.raises(ValueError) as caught:
        DARTPruner(128, **{option: value})
    assert message in str(caught.value)
    with pytest.raises(ValueError) as caught:
        dart_select(**_random(0), budget=8, **{option: value})
    assert message in str(caught.value)


def test_bad_option_in_the_config_fails_before_loading(no_heavy_work):
    from conftest import compose_config

    from evoprune.harness.common.errors import ConfigError
    from evoprune.harness.evaluation import runner

    with pytest.raises(ConfigError, match=r"pivot_order='set' is not one of: 'official', 'l1'"):
        runner.evaluate(compose_config("pruner=dart", "budget=64", "pruner.pivot_order=set"))


def test_bad_positions_are_rejected():
    data = _random(0)
    with pytest.raises(ValueError, match="image_start"):
        dart_select(**data, budget=8, image_start=-1)
    with pytest.raises(ValueError, match="text_start=40"):
        dart_select(**data, budget=8, image_start=0, text_start=40)
    with pytest.raises(TypeError, match=r"^image_start must be an int, got 3\.0$"):
        dart_select(**data, budget=8, image_start=3.0)
    with pytest.raises(TypeError, match=r"^text_start must be an int, got 60\.0$"):
        dart_select(**data, budget=8, text_start=60.0)
