"""Layer-wise merge schedules: exact sums, feasibility, exact final counts, bad input."""

import pytest

from evoprune.schedules import STRATEGIES, ScheduleError, layer_weights, merge_schedule, token_counts

OPTIONS = {"first": {"n": None}, "last": {"n": None}, "increasing": {"alpha": 1.0}, "decreasing": {"alpha": 1.0}}


def _options(strategy, num_layers):
    options = dict(OPTIONS.get(strategy, {}))
    if "n" in options:
        options["n"] = num_layers // 2
    return options


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("budget", [16, 32, 64, 128, 576])
@pytest.mark.parametrize("num_layers", [23, 24, 26])
def test_schedule_sums_is_feasible_and_ends_at_budget(strategy, budget, num_layers):
    schedule = merge_schedule(strategy, 576, budget, num_layers, **_options(strategy, num_layers))
    assert len(schedule) == num_layers
    assert sum(schedule) == 576 - budget
    counts = token_counts(576, schedule)
    assert counts[-1] == budget
    for entering, merged in zip(counts, schedule, strict=False):
        assert 0 <= merged <= entering // 2
    weights = layer_weights(strategy, num_layers, **_options(strategy, num_layers))
    assert all(merged == 0 for merged, w in zip(schedule, weights, strict=True) if w == 0)


@pytest.mark.parametrize("budget", [16, 64, 169])
def test_siglip_grid(budget):
    for strategy in STRATEGIES:
        schedule = merge_schedule(strategy, 729, budget, 26, **_options(strategy, 26))
        assert token_counts(729, schedule)[-1] == budget


def test_mean_splits_evenly_with_remainders_first():
    assert merge_schedule("mean", 100, 90, 4) == [3, 3, 2, 2]


def test_skip_merges_on_every_other_layer_from_the_first():
    assert merge_schedule("skip", 100, 88, 6) == [4, 0, 4, 0, 4, 0]


def test_increasing_and_decreasing_follow_depth():
    assert merge_schedule("increasing", 1000, 940, 3, alpha=1.0) == [10, 20, 30]
    assert merge_schedule("decreasing", 1000, 940, 3, alpha=1.0) == [30, 20, 10]
    assert merge_schedule("increasing", 1000, 860, 3, alpha=2.0) == [10, 40, 90]


def test_excess_over_half_moves_to_earlier_layers():
    # last[1] wants all 20 merges in the final layer, which can take at most 10 (halving 20 → 10)
    with pytest.raises(ScheduleError, match="smallest budget it reaches is 15"):
        merge_schedule("last", 30, 10, 3, n=1)
    assert merge_schedule("last", 30, 10, 3, n=2) == [0, 10, 10]
    # increasing: the last layer's share is capped at the tokens it leaves, the rest moves back
    # (shares 9, 18, 27 of R = 54: the last layer takes 10, the middle 20, the first 9 + 15)
    schedule = merge_schedule("increasing", 64, 10, 3, alpha=1.0)
    assert schedule == [24, 20, 10] and token_counts(64, schedule) == [64, 40, 20, 10]


def test_unreachable_budget_names_the_limit():
    with pytest.raises(ScheduleError, match=r"'first'.*smallest budget it reaches is 288"):
        merge_schedule("first", 576, 16, 24, n=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "zigzag"}, "is not one of: mean, skip, first, last, increasing, decreasing"),
        ({"strategy": "first", "n": 0}, r"N in \[1, 24\]"),
        ({"strategy": "last", "n": 25}, r"N in \[1, 24\]"),
        ({"strategy": "first"}, "N=None"),
        ({"strategy": "increasing", "alpha": 0.0}, "alpha > 0"),
        ({"strategy": "decreasing", "alpha": -1.0}, "alpha > 0"),
        ({"strategy": "mean", "budget": 577}, r"budget=577 must be in \[1, 576\]"),
        ({"strategy": "mean", "budget": 0}, r"budget=0"),
    ],
)
def test_bad_input_names_the_field(kwargs, message):
    arguments = {"num_tokens": 576, "budget": 64, "num_layers": 24, **kwargs}
    with pytest.raises(ScheduleError, match=message):
        merge_schedule(**arguments)


def test_increasing_and_decreasing_weights_are_powers_of_alpha():
    assert layer_weights("increasing", 3, alpha=2.0) == [1.0, 4.0, 9.0]
    assert layer_weights("decreasing", 3, alpha=2.0) == [9.0, 4.0, 1.0]


def test_shares_are_rounded_by_largest_remainder():
    # R = 5 over weights 1, 2, 3: exact 0.83, 1.67, 2.5 -> 0, 1, 2 and the two largest remainders (layers 0 and 1)
    assert merge_schedule("increasing", 105, 100, 3, alpha=1.0) == [1, 2, 2]


def test_the_smallest_valid_settings_are_accepted():
    assert layer_weights("mean", 1) == [1.0]
    assert merge_schedule("mean", 4, 2, num_layers=1) == [2]
    assert merge_schedule("first", 105, 100, 3, n=3) == merge_schedule("mean", 105, 100, 3)  # N = the layer count
    assert merge_schedule("constant", 10, 7, 5, r=1) == [1, 1, 1, 0, 0]
    assert merge_schedule("constant", 10, 7, num_layers=1) == [3]


def test_constant_r_never_merges_more_than_half_of_a_layers_tokens():
    assert merge_schedule("constant", 7, 1, 4, r=5) == [3, 2, 1, 0]


@pytest.mark.parametrize("r", [True, 2.5, 0])
def test_constant_r_must_be_a_positive_integer(r):
    with pytest.raises(ScheduleError, match=f"needs r \\(tokens merged per layer\\) >= 1 or null; got r={r!r}"):
        merge_schedule("constant", 10, 7, 5, r=r)


@pytest.mark.parametrize("n", [True, 2.0])
def test_first_n_must_be_an_integer(n):
    with pytest.raises(ScheduleError, match=f"needs N in \\[1, 4\\] \\(the layer count\\); got N={n!r}"):
        layer_weights("first", 4, n=n)


def test_zero_layers_is_refused_by_every_strategy():
    with pytest.raises(ScheduleError, match="num_layers=0 must be at least 1"):
        layer_weights("mean", 0)
    with pytest.raises(ScheduleError, match="num_layers=0 must be at least 1"):
        merge_schedule("constant", 10, 7, 0)
