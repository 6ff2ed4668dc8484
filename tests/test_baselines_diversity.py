"""DivPrune and CDPruner selection: hand-worked cases, properties on random inputs, and agreement with
slow, plainly written reference implementations."""

import math
import re

import pytest
import torch

from baselines.cdpruner import (
    GAIN_FLOOR,
    cdpruner_select,
    conditional_kernel,
    dpp_map_greedy,
    gain_floor,
    query_relevance,
)
from baselines.divprune import cosine_distance, divprune_order, divprune_select

# --- slow references ---------------------------------------------------------------------------


def reference_divprune(features: torch.Tensor, budget: int) -> list[int]:
    """The official rule in plain loops, float64: first pick = max over tokens of the second smallest
    distance in its column (the smallest being itself), then max-min distance to the picked set; picked
    tokens excluded; ties to the lowest index."""
    rows = [[float(v) for v in row] for row in features.double()]
    norms = [math.sqrt(sum(v * v for v in row)) for row in rows]
    count = len(rows)

    def distance(i, j):
        return 1.0 - sum(a * b for a, b in zip(rows[i], rows[j], strict=True)) / (norms[i] * norms[j])

    dist = [[distance(i, j) for j in range(count)] for i in range(count)]
    second = [sorted(dist[i][j] for i in range(count))[1] for j in range(count)]
    order = [max(range(count), key=lambda j: (second[j], -j))]
    while len(order) < budget:
        free = [j for j in range(count) if j not in order]
        order.append(max(free, key=lambda j: (min(dist[s][j] for s in order), -j)))
    return order


def reference_dpp(kernel: torch.Tensor, budget: int) -> list[int]:
    """Greedy MAP by explicit log-determinants: each step adds the token maximising log det L[S ∪ {j}]."""
    kernel = kernel.double()
    order: list[int] = []
    for _ in range(budget):
        best, best_value = None, -math.inf
        for j in range(kernel.shape[0]):
            if j in order:
                continue
            subset = torch.tensor(order + [j])
            sign, value = torch.linalg.slogdet(kernel[subset][:, subset])
            if sign > 0 and value > best_value:
                best, best_value = j, float(value)
        order.append(best)
    return order


def random_kernel(tokens: int, rank: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tokens, rank, generator=generator, dtype=torch.float64)
    quality = torch.rand(tokens, generator=generator, dtype=torch.float64) + 0.1
    return quality[:, None] * (features @ features.T) * quality[None, :]


def on_circle(degrees: list[float], scales: list[float]) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor(scales, dtype=torch.float64)[:, None]


# --- DivPrune ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "computed"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32)]
    + [(torch.float64, torch.float64)],
)
def test_cosine_distance_is_one_minus_cosine_in_float32_or_float64(dtype, computed):
    # Norms do not matter: the same direction is 0 apart, orthogonal 1, opposite 2.
    features = torch.tensor([[2.0, 0.0], [0.0, 0.5], [-4.0, 0.0]], dtype=dtype)
    distance = cosine_distance(features)
    assert distance.dtype == computed
    expected = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]], dtype=computed)
    assert torch.equal(distance, expected)


def test_divprune_keeps_float64_precision():
    # Tilts of 1e-6 and 1.5e-6 rad from token 0: distances 5e-13 and 1.1e-12, both 0 in float32. Token 3
    # (orthogonal) comes first, token 0 is farthest from it; then token 2 is farther from both than token 1.
    features = torch.tensor([[1.0, 0.0], [1.0, 1e-6], [1.0, 1.5e-6], [0.0, 1.0]], dtype=torch.float64)
    assert cosine_distance(features)[0, 1] < cosine_distance(features)[0, 2]
    assert divprune_order(features, 3).tolist() == [3, 0, 2]


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_divprune_rejects_features_that_are_not_2d(shape):
    with pytest.raises(ValueError, match=re.escape(f"features must be (N, C), got shape {shape}")):
        divprune_order(torch.randn(shape), 2)


def test_divprune_hand_worked_circle():
    # Directions 0°, 20°, 40°, 180°: 180° has the farthest nearest neighbour (140°); then 0° is farthest
    # from it (2 vs 1.94, 1.77); then 40° (min 0.234 via 0°) beats 20° (min 0.060). Norms do not matter.
    features = on_circle([0, 20, 40, 180], [1.0, 3.0, 0.5, 2.0])
    assert divprune_order(features, 3).tolist() == [3, 0, 2]
    assert divprune_select(features, 3).tolist() == [0, 2, 3]


def test_divprune_never_picks_a_duplicate_twice():
    # [a, a, b]: b first, then a (index 0); every remaining score is then 0, where the official would
    # pick token 0 again. Here the duplicate (index 1) comes next.
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert divprune_order(features, 3).tolist() == [2, 0, 1]
    duplicated = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)).repeat(3, 1)
    assert divprune_select(duplicated, 15).tolist() == list(range(15))
    assert len(set(divprune_select(duplicated, 9).tolist())) == 9


def test_divprune_ties_go_to_the_lowest_index():
    # Four directions at right angles (exact in floats): every nearest-neighbour distance is 1, so
    # token 0 comes first; its opposite (index 2) is then farthest, and the other two tie at distance 1
    # from both: index 1 wins.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert divprune_order(features, 4).tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("seed", range(4))
def test_divprune_matches_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(24, 6, generator=generator, dtype=torch.float64)
    assert divprune_order(features, 10).tolist() == reference_divprune(features, 10)


# --- CDPruner ------------------------------------------------------------------------------------


def test_relevance_is_negated_and_min_max_normalised():
    # Cosines with the text: +1, −1, 0 → negated −1, 1, 0 → (r + 1 + 1e-6) / 2.
    text = torch.tensor([[1.0, 0.0]])
    image = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    relevance = query_relevance(image, text)
    assert relevance.argmax().item() == 1  # the token least similar to the text
    expected = torch.tensor([1e-6 / 2, (2 + 1e-6) / 2, (1 + 1e-6) / 2])
    torch.testing.assert_close(relevance, expected, rtol=1e-6, atol=0.0)  # the offset 1e-6 itself is seen


def test_relevance_averages_the_text_chunks():
    # Mean cosine over two chunks: token 0 = (1 + 0)/2, token 1 = (0 + 1)/2, token 2 = (−1 − 1)/2.
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    relevance = query_relevance(image, text)
    assert relevance[0] == relevance[1]
    assert relevance.argmax().item() == 2


def test_relevance_weighs_every_text_chunk_alike_whatever_its_norm():
    # Chunk norms 10 and 1: the mean of the cosines ties tokens 0 and 1; a mean of raw dot products, or
    # text normalised as a whole, would favour the token along the long chunk.
    text = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[3.0, 0.0], [0.0, 0.5], [-1.0, -1.0]])
    for negate in (True, False):
        relevance = query_relevance(image, text, negate=negate)
        assert relevance[0] == relevance[1]


def test_relevance_without_negation_is_the_min_max_normalised_mean_cosine():
    # Cosines with the text: +1, −1, 0 → (r + 1 + 1e-6) / 2: the token most similar to the text is the most relevant.
    text = torch.tensor([[1.0, 0.0]])
    image = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    relevance = query_relevance(image, text, negate=False)
    expected = torch.tensor([(2 + 1e-6) / 2, 1e-6 / 2, (1 + 1e-6) / 2])
    torch.testing.assert_close(relevance, expected, rtol=1e-6, atol=0.0)


def test_constant_relevance_becomes_ones():
    relevance = query_relevance(torch.ones(4, 3), torch.randn(2, 3))
    assert torch.equal(relevance, torch.ones(4))


def test_dpp_on_an_orthogonal_kernel_picks_by_diagonal():
    kernel = torch.diag(torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1]))
    assert dpp_map_greedy(kernel, 4).tolist() == [1, 3, 2, 0]


def test_dpp_past_the_rank_fills_by_diagonal():
    # Tokens 0, 1 share direction e1; tokens 2, 3 share e2 (rank 2). Greedy: 0 (q² = 1), then 3
    # (0.81, orthogonal to 0); both others then have zero gain, where the official yields NaN.
    # Fill by descending diagonal: 2 (0.64), then 1 (0.25).
    directions = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    kernel = conditional_kernel(directions, torch.tensor([1.0, 0.5, 0.8, 0.9]))
    assert dpp_map_greedy(kernel, 4).tolist() == [0, 3, 2, 1]


def test_dpp_fill_ties_go_to_the_lower_index():
    # Twenty copies of one token (rank 1): the greedy takes token 0, every other gain is then 0 and the
    # fill ranks twenty equal diagonals: by index (an unstable sort scrambles ties from 17 entries on).
    kernel = torch.ones(20, 20)
    assert dpp_map_greedy(kernel, 20).tolist() == list(range(20))
    assert dpp_map_greedy(kernel, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gain_floor_is_64_eps_of_the_kernel_dtype_times_the_largest_diagonal(dtype):
    kernel = torch.diag(torch.tensor([0.25, 0.125, 0.0625], dtype=dtype))
    assert gain_floor(kernel).item() == GAIN_FLOOR * torch.finfo(dtype).eps * 0.25
    assert gain_floor(4 * kernel).item() == GAIN_FLOOR * torch.finfo(dtype).eps * 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpp_stops_at_a_gain_equal_to_the_floor_and_continues_above_it(dtype):
    # Tokens 0 and 1 are copies (diagonal 1/4), token 2 is orthogonal with diagonal t. After token 0
    # the best gain is t (token 1's is 0). t = the floor (64 eps · 1/4, exact in binary): the guard
    # stops ("not above the floor") and the fill takes token 1 by its larger diagonal; t = 2 × the
    # floor: the greedy takes token 2.
    floor = GAIN_FLOOR * torch.finfo(dtype).eps * 0.25
    for gain, expected in [(floor, [0, 1]), (2 * floor, [0, 2])]:
        kernel = torch.tensor([[0.25, 0.25, 0.0], [0.25, 0.25, 0.0], [0.0, 0.0, gain]], dtype=dtype)
        assert gain_floor(kernel).item() == floor
        assert dpp_map_greedy(kernel, 2).tolist() == expected, gain


@pytest.mark.parametrize("shape", [(3, 4), (4,), (2, 2, 2)])
def test_dpp_rejects_a_kernel_that_is_not_square(shape):
    with pytest.raises(ValueError, match=re.escape(f"kernel must be square (N, N), got shape {shape}")):
        dpp_map_greedy(torch.ones(shape), 2)


@pytest.mark.parametrize("seed", range(4))
def test_dpp_matches_log_det_reference(seed):
    kernel = random_kernel(16, 32, seed)
    assert dpp_map_greedy(kernel, 12).tolist() == reference_dpp(kernel, 12)


def test_dpp_rank_deficient_matches_reference_up_to_the_rank():
    kernel = random_kernel(16, 5, seed=7)
    order = dpp_map_greedy(kernel, 10).tolist()
    assert order[:5] == reference_dpp(kernel, 5)
    rest = sorted(set(range(16)) - set(order[:5]), key=lambda j: (-float(kernel[j, j]), j))
    assert order[5:] == rest[:5]


def near_duplicates(tokens: int, groups: int, gain_in_eps: float, dtype=torch.float32):
    """Unit features: ``groups`` orthonormal directions (tokens 0 … groups−1), exact copies of them
    (cycling, up to the last ``groups`` tokens) and, last, one near-duplicate per direction, tilted
    towards a fresh direction so that its conditional gain once its direction is picked is
    ``gain_in_eps`` · eps(dtype) at relevance 0.9 (the others at 1). Randomly rotated, so that no
    entry is exact. Returns the kernel and the near-duplicates' indices."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 2 * groups, generator=generator, dtype=torch.float64)).Q.T
    quality = 0.9
    sin2 = gain_in_eps * torch.finfo(dtype).eps / quality**2  # gain = quality² · sin²(tilt)
    tilt = math.asin(math.sqrt(sin2))
    copies = [basis[i % groups] for i in range(tokens - groups)]
    near = [math.cos(tilt) * basis[i] + math.sin(tilt) * basis[groups + i] for i in range(groups)]
    features = torch.stack(copies + near).to(dtype)
    relevance = torch.ones(tokens, dtype=dtype)
    relevance[-groups:] = quality
    kernel = (
        relevance[:, None]
        * (torch.nn.functional.normalize(features, dim=-1) @ torch.nn.functional.normalize(features, dim=-1).T)
        * relevance[None, :]
    )
    return kernel, list(range(tokens - groups, tokens))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpp_keeps_picking_real_gains_between_the_new_and_the_old_floor(dtype):
    # 576 tokens: 8 directions, 560 exact copies, 8 near-duplicates whose gain is 2 × the floor (128 eps),
    # below the old floor N · eps · max diag (576 eps). The greedy must pick the 8 directions, then
    # the 8 near-duplicates (the fill by diagonal would take copies: diagonal 1 against 0.81).
    kernel, near = near_duplicates(576, 8, gain_in_eps=2 * GAIN_FLOOR, dtype=dtype)
    eps = torch.finfo(dtype).eps
    assert gain_floor(kernel) < 2 * GAIN_FLOOR * eps < 576 * eps * kernel.diagonal().max()
    order = dpp_map_greedy(kernel, 20).tolist()
    assert sorted(i % 8 for i in order[:8]) == list(range(8))  # one token per direction
    assert sorted(order[8:16]) == near
    assert len(set(order)) == 20
    # A hair below the floor, the same near-duplicates are roundoff to the guard: it stops, fills by diagonal.
    kernel, near = near_duplicates(576, 8, gain_in_eps=GAIN_FLOOR / 2, dtype=dtype)
    order = dpp_map_greedy(kernel, 20).tolist()
    assert not set(order) & set(near)
    assert len(set(order)) == 20


@pytest.mark.parametrize(("tokens", "rank"), [(576, 8), (169, 24), (64, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpp_stops_at_an_exact_rank_and_fills(tokens, rank, dtype):
    # Features of exact rank `rank` (plus exact duplicates): the greedy runs to the rank, the guard
    # stops it there (where the official loop takes the square root of roundoff or of a negative
    # number), the rest is the fill by descending diagonal: distinct, no NaN in the kernel path.
    generator = torch.Generator().manual_seed(tokens + rank)
    features = torch.randn(tokens, rank, generator=generator, dtype=torch.float64)
    features = (features @ torch.randn(rank, 256, generator=generator, dtype=torch.float64)).to(dtype)
    features[-10:] = features[:10]
    relevance = (torch.rand(tokens, generator=generator, dtype=torch.float64) + 0.1).to(dtype)
    unit = torch.nn.functional.normalize(features, dim=-1)  # as conditional_kernel, in `dtype`
    kernel = relevance[:, None] * (unit @ unit.T) * relevance[None, :]
    if dtype == torch.float32:
        assert torch.equal(kernel, conditional_kernel(features, relevance))
    budget = rank + 12
    order = dpp_map_greedy(kernel, budget).tolist()
    assert len(order) == budget and len(set(order)) == budget
    assert order[:rank] == reference_dpp(kernel, rank)
    diagonal = kernel.diagonal()
    rest = sorted(set(range(tokens)) - set(order[:rank]), key=lambda j: (-float(diagonal[j]), j))
    assert order[rank:] == rest[:12]


def reference_cdpruner(visual, image, text, budget, negate=True) -> list[int]:
    """The official pipeline with torch's cosine_similarity: relevance (negated mean cosine, min-max with
    the 1e-6 offset), kernel diag(r) S diag(r), greedy by explicit log-determinants, sorted."""
    quality = torch.nn.functional.cosine_similarity(image[:, None], text[None], dim=-1).mean(-1)
    quality = -quality if negate else quality
    quality = (quality - quality.min() + 1e-6) / (quality.max() - quality.min())
    kernel = quality[:, None] * torch.nn.functional.cosine_similarity(visual[:, None], visual[None], dim=-1)
    return sorted(reference_dpp(kernel * quality[None, :], budget))


@pytest.mark.parametrize("texts", [3, 1])
def test_cdpruner_matches_reference_pipeline(texts):
    generator = torch.Generator().manual_seed(3)
    visual = torch.randn(20, 12, generator=generator)
    image = torch.randn(20, 8, generator=generator)
    text = torch.randn(texts, 8, generator=generator)
    assert cdpruner_select(visual, image, text, 8).tolist() == reference_cdpruner(visual, image, text, 8)


def test_cdpruner_without_negation_matches_reference_pipeline():
    generator = torch.Generator().manual_seed(3)
    visual, image, text = (torch.randn(*shape, generator=generator) for shape in [(20, 12), (20, 8), (3, 8)])
    plain = cdpruner_select(visual, image, text, 8, negate=False).tolist()
    assert plain == reference_cdpruner(visual, image, text, 8, negate=False)
    assert plain != cdpruner_select(visual, image, text, 8).tolist()  # the keyword reaches the relevance


# --- properties of both --------------------------------------------------------------------------


def select_divprune(features, image, text, budget):
    return divprune_select(features, budget)


def select_cdpruner(features, image, text, budget):
    return cdpruner_select(features, image, text, budget)


SELECTORS = [select_divprune, select_cdpruner]


def random_inputs(tokens: int, seed: int, rank: int = 16, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, 32, generator=generator)
    features = (torch.randn(tokens, rank, generator=generator) @ basis).to(dtype)
    return features, torch.randn(tokens, 8, generator=generator), torch.randn(2, 8, generator=generator)


@pytest.mark.parametrize("select", SELECTORS)
@pytest.mark.parametrize(("tokens", "rank", "budget"), [(40, 16, 7), (40, 16, 40), (40, 4, 25), (9, 2, 9)])
def test_exact_count_sorted_distinct_deterministic(select, tokens, rank, budget):
    inputs = random_inputs(tokens, seed=budget, rank=rank)
    chosen = select(*inputs, budget)
    assert chosen.dtype == torch.long and chosen.shape == (budget,)
    assert torch.equal(chosen, chosen.sort().values)
    assert len(set(chosen.tolist())) == budget
    assert 0 <= chosen.min() and chosen.max() < tokens
    assert torch.equal(select(*inputs, budget), chosen)


@pytest.mark.parametrize("select", SELECTORS)
def test_budget_n_keeps_everything(select):
    inputs = random_inputs(30, seed=1, rank=3)
    assert select(*inputs, 30).tolist() == list(range(30))


@pytest.mark.parametrize("select", SELECTORS)
def test_half_precision_features(select):
    features, image, text = random_inputs(30, seed=2, dtype=torch.float16)
    assert len(set(select(features, image, text, 12).tolist())) == 12


@pytest.mark.parametrize("select", SELECTORS)
@pytest.mark.parametrize(
    "budget, error", [(0, ValueError), (31, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_budget_is_validated(select, budget, error):
    with pytest.raises(error, match=r"budget=.*\[1, 30\]"):
        select(*random_inputs(30, seed=0), budget)


def test_cdpruner_rejects_mismatched_shapes():
    features, image, text = random_inputs(10, seed=0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        cdpruner_select(features, image[:9], text, 3)
    with pytest.raises(ValueError, match="shapes do not fit"):
        cdpruner_select(features, image, text[:, :5], 3)


@pytest.mark.parametrize("which", range(3))
@pytest.mark.parametrize("extra", [(), (1, 1)])
def test_cdpruner_rejects_inputs_that_are_not_2d(which, extra):
    # One of the three is 1-D or 3-D (the others fit it where they can): named by the 2-D check, not
    # failing later on a shape or a matmul.
    inputs = list(random_inputs(10, seed=0))
    inputs[which] = inputs[which][:, 0] if not extra else inputs[which][:, :, None]
    message = "visual_features, image_embeds and text_embeds must all be 2-D"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cdpruner_select(*inputs, 3)


def test_cdpruner_rejects_empty_text_embeddings():
    features, image, text = random_inputs(10, seed=0)
    message = "text_embeds is empty: CDPruner needs at least one text embedding"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cdpruner_select(features, image, text[:0], 3)
