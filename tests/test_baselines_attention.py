"""FasterVLM and VisPruner token selection: hand-worked cases, properties, and a plain reference."""

from __future__ import annotations

import math
import re

import pytest
import torch

from baselines.fastervlm import fastervlm_select
from baselines.vispruner import vispruner_select


def descending_by_index(n: int) -> torch.Tensor:
    """Attention that ranks the tokens 0, 1, …, n − 1 (so the candidate list is in index order)."""
    return torch.linspace(1.0, 0.1, n)


def one_hot_features(directions: list[int], dim: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(directions), dim).float()


# --- FasterVLM, hand-worked ---------------------------------------------------------------------


def test_fastervlm_keeps_the_largest_scores_in_index_order():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    assert fastervlm_select(scores, 3).tolist() == [1, 3, 4]


def test_fastervlm_ties_go_to_the_lower_index():
    scores = torch.tensor([0.2, 0.5, 0.2, 0.5, 0.5])
    assert fastervlm_select(scores, 1).tolist() == [1]
    assert fastervlm_select(scores, 2).tolist() == [1, 3]
    assert fastervlm_select(scores, 4).tolist() == [0, 1, 3, 4]


def test_fastervlm_accepts_float16_and_returns_int64():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.9], dtype=torch.float16)
    selected = fastervlm_select(scores, 2)
    assert selected.dtype == torch.int64
    assert selected.tolist() == [1, 3]


# --- VisPruner, hand-worked ---------------------------------------------------------------------


def test_vispruner_ratio_one_is_fastervlm():
    gen = torch.Generator().manual_seed(0)
    scores, features = torch.rand(50, generator=gen), torch.randn(50, 8, generator=gen)
    for budget in (1, 7, 25, 50):
        assert torch.equal(vispruner_select(scores, features, budget, 1.0), fastervlm_select(scores, budget))


def test_vispruner_drops_one_of_two_duplicates():
    # Ratio 0: all 3 tokens are diverse. Candidates by attention: [0, 1, 2, 3]; one round removes 1.
    # Even side [0, 2], odd side [1, 3]. Token 0 duplicates token 1 (redundancy 1), token 2 is
    # orthogonal to both odd tokens (redundancy 0): token 0 goes, although its attention is highest.
    features = one_hot_features([0, 0, 1, 2])
    assert vispruner_select(descending_by_index(4), features, 3, 0.0).tolist() == [1, 2, 3]
    assert fastervlm_select(descending_by_index(4), 3).tolist() == [0, 1, 2]


def test_vispruner_important_then_diverse():
    # Attention order: 0, 4, 2, 5, 3, 1, 6. Budget 6 at ratio 0.5: important {0, 4, 2}; candidates
    # [5, 3, 1, 6] must lose 1 token. Even side [5, 1], odd side [3, 6]. Token 1 points along token
    # 6 (twice its length: the features are normalised), token 5 is orthogonal to both: 1 goes.
    scores = torch.tensor([0.30, 0.05, 0.20, 0.10, 0.25, 0.15, 0.01])
    features = torch.zeros(7, 4)
    features[[0, 2, 4], 0] = 1.0
    features[3, 1], features[6, 2], features[1, 2], features[5, 3] = 1.0, 1.0, 2.0, 1.0
    assert vispruner_select(scores, features, 6).tolist() == [0, 2, 3, 4, 5, 6]
    assert fastervlm_select(scores, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_vispruner_odd_length_keeps_the_one_surviving_even_token():
    # Candidates [0..4] must shrink to 3: r = 2 from the even side [0, 2, 4], odd side [1, 3].
    # Tokens 0 and 4 duplicate odd tokens, token 2 survives. (The official loop drops all three
    # even tokens here and returns [1, 3], budget - 1 tokens.)
    features = one_hot_features([0, 0, 1, 2, 2])
    assert vispruner_select(descending_by_index(5), features, 3, 0.0).tolist() == [1, 2, 3]


def test_vispruner_round_larger_than_even_side_drops_the_whole_even_side():
    # Candidates [0..11] must shrink to 3. Round 1: r = 8 but the even side holds 6, so all of it
    # goes, leaving [1, 3, 5, 7, 9, 11]. Round 2: r = 3 = the even side [1, 5, 9], leaving
    # [3, 7, 11], whatever the features. (The official loop raises a RuntimeError here.)
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    assert vispruner_select(descending_by_index(12), features, 3, 0.0).tolist() == [3, 7, 11]


def test_vispruner_float16_features_are_compared_in_float32():
    # Ratio 0, candidates [0, 1, 2, 3]: even side [0, 2], odd side [1, 3]. Redundancies 0.9998 (token 0
    # with 1) and 0.99995 (token 2 with 3): token 2 goes. In float16 both round to 1.0 and the tie would
    # drop token 0.
    features = torch.tensor([[1.0, 0.02], [1.0, 0.0], [0.01, 1.0], [0.0, 1.0]]).half()
    scores = descending_by_index(4)
    assert vispruner_select(scores, features, 3, 0.0).tolist() == [0, 1, 3]
    assert torch.equal(vispruner_select(scores, features, 3, 0.0), vispruner_select(scores, features.float(), 3, 0.0))


def test_vispruner_ties_are_deterministic():
    # All attention and all features equal. Important (2 of budget 4): [0, 1] by lower index.
    # Candidates [2, 3, 4] lose 1: even side [2, 4] tie at redundancy 1; the earlier one (2) goes.
    selected = vispruner_select(torch.ones(5), torch.ones(5, 3), 4)
    assert selected.tolist() == [0, 1, 3, 4]


# --- Validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 6, -1])
def test_budget_out_of_range(budget):
    with pytest.raises(ValueError, match=r"budget.*\[1, 5\]"):
        fastervlm_select(torch.rand(5), budget)
    with pytest.raises(ValueError, match=r"budget.*\[1, 5\]"):
        vispruner_select(torch.rand(5), torch.randn(5, 2), budget)


@pytest.mark.parametrize("budget", [2.0, True, "2"])
def test_budget_not_an_integer(budget):
    with pytest.raises(TypeError, match=r"budget.*\[1, 5\]"):
        fastervlm_select(torch.rand(5), budget)
    with pytest.raises(TypeError, match=r"budget.*\[1, 5\]"):
        vispruner_select(torch.rand(5), torch.randn(5, 2), budget)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, math.nan])
def test_important_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match="important_ratio"):
        vispruner_select(torch.rand(5), torch.randn(5, 2), 3, ratio)


def test_bad_tensors_are_rejected():
    with pytest.raises(ValueError, match="cls_attention"):
        fastervlm_select(torch.rand(2, 3), 1)
    with pytest.raises(ValueError, match="^cls_attention contains NaN or infinite values$"):
        fastervlm_select(torch.tensor([0.1, math.nan]), 1)
    with pytest.raises(TypeError, match="cls_attention"):
        fastervlm_select(torch.tensor([1, 2]), 1)
    with pytest.raises(ValueError, match="features"):
        vispruner_select(torch.rand(5), torch.randn(4, 2), 3)
    with pytest.raises(ValueError, match="^features contain NaN or infinite values$"):
        vispruner_select(torch.rand(2), torch.tensor([[1.0, math.inf], [0.0, 1.0]]), 1)
    with pytest.raises(TypeError, match=f"^{re.escape('features must be a floating tensor, got torch.int64')}$"):
        vispruner_select(torch.rand(2), torch.tensor([[1, 0], [0, 1]]), 1)


# --- Properties over random inputs ---------------------------------------------------------------

SIZES = (1, 2, 9, 24, 169, 576)


def random_case(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen), torch.randn(n, 16, generator=gen)


def budgets(n: int) -> list[int]:
    return sorted({min(n, b) for b in (1, 2, n // 3, n // 2, n - 1, 64, 77)} - {0} | {n})


@pytest.mark.parametrize("n", SIZES)
def test_selection_properties(n):
    scores, features = random_case(n, seed=n)
    for budget in budgets(n):
        results = [fastervlm_select(scores, budget)]
        results += [vispruner_select(scores, features, budget, ratio) for ratio in (0.0, 0.3, 0.5, 1.0)]
        for selected in results:
            assert selected.dtype == torch.int64
            assert selected.numel() == budget
            assert torch.equal(selected, selected.unique())  # sorted ascending, no duplicates
            assert 0 <= selected.min() and selected.max() < n
        assert torch.equal(vispruner_select(scores, features, budget), vispruner_select(scores, features, budget))
    assert torch.equal(fastervlm_select(scores, n), torch.arange(n))
    assert torch.equal(vispruner_select(scores, features, n), torch.arange(n))


# --- A plain reference: lists and loops, written from the method's description ----------------------


def reference_order(scores: list[float]) -> list[int]:
    """Indices by descending score; Python's sort is stable, so ties keep the lower index first."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def reference_fastervlm(scores: torch.Tensor, budget: int) -> list[int]:
    return sorted(reference_order(scores.tolist())[:budget])


def reference_vispruner(scores: torch.Tensor, features: torch.Tensor, budget: int, ratio: float) -> list[int]:
    num_important = int(budget * ratio)
    order = reference_order(scores.tolist())
    important, remaining = order[:num_important], order[num_important:]
    wanted = budget - num_important
    if wanted == 0:
        return sorted(important)
    unit = []
    for row in features.tolist():
        norm = math.sqrt(sum(v * v for v in row))
        unit.append([v / norm for v in row])
    while len(remaining) > wanted:
        num_removed = min(8, len(remaining) - wanted)
        even, odd = remaining[0::2], remaining[1::2]
        redundancy = [max(sum(x * y for x, y in zip(unit[i], unit[j], strict=True)) for j in odd) for i in even]
        most_redundant_first = reference_order(redundancy)
        survivors = [even[k] for k in most_redundant_first[num_removed:]]
        remaining = survivors + odd
    return sorted(important + remaining)


@pytest.mark.parametrize("n", [13, 20, 37, 48])
def test_vispruner_matches_reference(n):
    # Odd n and odd important counts give odd-length candidate lists, where the official loop fails.
    gen = torch.Generator().manual_seed(100 + n)
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    features = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    for budget in range(1, n + 1):
        for ratio in (0.0, 0.3, 0.5, 1.0):
            expected = reference_vispruner(scores, features, budget, ratio)
            assert vispruner_select(scores, features, budget, ratio).tolist() == expected, (budget, ratio)


@pytest.mark.parametrize("seed", range(4))
def test_vispruner_matches_reference_with_many_ties(seed):
    # Attention on 3 levels and one-hot features (scaled by powers of two) make exact ties in both
    # rankings; cosines are exactly 0 or 1, so both implementations see the same ties.
    gen = torch.Generator().manual_seed(seed)
    n = 30 + seed
    scores = torch.randint(0, 3, (n,), generator=gen).double()
    directions = torch.randint(0, 4, (n,), generator=gen)
    scale = 2.0 ** torch.randint(-2, 3, (n, 1), generator=gen).double()
    features = torch.nn.functional.one_hot(directions, 4).double() * scale
    for budget in range(1, n + 1):
        for ratio in (0.0, 0.5, 1.0):
            expected = reference_vispruner(scores, features, budget, ratio)
            assert vispruner_select(scores, features, budget, ratio).tolist() == expected, (budget, ratio)
        assert fastervlm_select(scores, budget).tolist() == reference_fastervlm(scores, budget)
