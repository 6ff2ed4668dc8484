"""Layer-wise merge budgets (paper §3.2 and Appendix A): how many tokens each encoder layer merges.

`merge_schedule` turns a strategy into integers r_l, one per counted layer, with Σ r_l = R =
num_tokens − budget exactly. Counted layers are those whose output the model reads (for LLaVA-1.5,
features from layer −2 of 24 → the first 23 layers); layers after the feature layer are not
counted. Tokens here are the mergeable ones: patch tokens, without CLS.

Strategies (weights w_l over layers l = 0 … L−1, 0-based):
  mean          w_l = 1 on every layer
  skip          w_l = 1 on layers 0, 2, 4, … (every other layer, starting at the first)
  first (N)     w_l = 1 on the first N layers
  last (N)      w_l = 1 on the last N layers
  increasing(α) w_l = (l + 1)^α
  decreasing(α) w_l = (L − l)^α
  constant (r)  ToMe's constant r: r_l = r from the first layer on until R is merged (the last merging
                layer takes what is left, later layers none); r = ⌈R / L⌉ unless given
R is split in proportion to w (largest remainders, ties to the earlier layer). A bipartite merge
can at most halve the tokens of a layer, so r_l ≤ ⌊n_l / 2⌋ with n_l tokens entering layer l;
where a layer's share exceeds that, the excess moves to the nearest earlier layer with w_l > 0
(a backward pass from the last layer). A strategy whose layers cannot absorb R this way raises
`ScheduleError` naming the smallest budget it can reach. The paper gives neither the skip phase nor
how shares are rounded or capped: these are this module's choices.
"""

from __future__ import annotations

from collections.abc import Sequence

STRATEGIES = ("mean", "skip", "first", "last", "increasing", "decreasing", "constant")


class ScheduleError(ValueError):
    """The requested schedule is invalid or cannot reach the budget."""


def layer_weights(strategy: str, num_layers: int, n: int | None = None, alpha: float | None = None) -> list[float]:
    """The strategy's relative share per layer (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ScheduleError(f"schedule={strategy!r} is not one of: {', '.join(STRATEGIES)}")
    if num_layers < 1:
        raise ScheduleError(f"num_layers={num_layers} must be at least 1")
    if strategy in ("first", "last"):
        if n is None or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_layers:
            raise ScheduleError(f"schedule {strategy!r} needs N in [1, {num_layers}] (the layer count); got N={n!r}")
    if strategy in ("increasing", "decreasing"):
        if alpha is None or isinstance(alpha, bool) or not alpha > 0:
            raise ScheduleError(f"schedule {strategy!r} needs alpha > 0; got alpha={alpha!r}")
    layers = range(num_layers)
    if strategy in ("mean", "constant"):
        return [1.0 for _ in layers]
    if strategy == "skip":
        return [1.0 if layer % 2 == 0 else 0.0 for layer in layers]
    if strategy == "first":
        return [1.0 if layer < n else 0.0 for layer in layers]
    if strategy == "last":
        return [1.0 if layer >= num_layers - n else 0.0 for layer in layers]
    if strategy == "increasing":
        return [float(layer + 1) ** alpha for layer in layers]
    return [float(num_layers - layer) ** alpha for layer in layers]


def _proportional_split(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainder, stable)."""
    weight_sum = sum(weights)
    exact = [total * w / weight_sum for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def merge_schedule(
    strategy: str,
    num_tokens: int,
    budget: int,
    num_layers: int,
    n: int | None = None,
    alpha: float | None = None,
    r: int | None = None,
) -> list[int]:
    """Tokens merged at each of ``num_layers`` layers to go from ``num_tokens`` to ``budget``."""
    if not 1 <= budget <= num_tokens:
        raise ScheduleError(f"budget={budget} must be in [1, {num_tokens}] (the mergeable tokens)")
    if strategy == "constant":
        return _constant_schedule(num_tokens, budget, num_layers, r)
    weights = layer_weights(strategy, num_layers, n, alpha)
    shares = _proportional_split(num_tokens - budget, weights)
    schedule = [0] * num_layers
    carry = 0
    tokens_after = budget
    for layer in reversed(range(num_layers)):
        if weights[layer] == 0:
            continue
        wanted = shares[layer] + carry
        merged = min(wanted, tokens_after)  # r ≤ ⌊(n_after + r) / 2⌋  ⇔  r ≤ n_after
        schedule[layer] = merged
        carry = wanted - merged
        tokens_after += merged
    if carry:
        smallest = num_tokens
        for weight in weights:
            smallest -= smallest // 2 if weight > 0 else 0
        raise ScheduleError(
            f"schedule {strategy!r} (N={n}, alpha={alpha}) over {num_layers} layers cannot merge "
            f"{num_tokens} tokens down to budget={budget}: each of its merging layers at most halves "
            f"the tokens, so the smallest budget it reaches is {smallest}"
        )
    return schedule


def _constant_schedule(num_tokens: int, budget: int, num_layers: int, r: int | None) -> list[int]:
    """ToMe's constant r per layer (each layer at most halving its tokens), stopped at the budget."""
    total = num_tokens - budget
    if num_layers < 1:
        raise ScheduleError(f"num_layers={num_layers} must be at least 1")
    if r is None:
        r = -(-total // num_layers)
    elif isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ScheduleError(f"schedule 'constant' needs r (tokens merged per layer) >= 1 or null; got r={r!r}")
    schedule, tokens = [], num_tokens
    for _ in range(num_layers):
        merged = min(r, tokens - budget, tokens // 2)
        schedule.append(merged)
        tokens -= merged
    if tokens != budget:
        raise ScheduleError(
            f"schedule 'constant' with r={r} over {num_layers} layers merges {num_tokens} tokens only down to "
            f"{tokens}, not budget={budget}: raise r (null picks the smallest r that reaches the budget)"
        )
    return schedule


def token_counts(num_tokens: int, schedule: Sequence[int]) -> list[int]:
    """Tokens entering each layer, then the final count: ``len(schedule) + 1`` numbers."""
    counts = [num_tokens]
    for merged in schedule:
        counts.append(counts[-1] - merged)
    return counts
