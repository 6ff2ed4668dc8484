"""Input checks shared by the baselines' selection functions."""

from __future__ import annotations

import numbers


def check_budget(budget: object, num_tokens: int) -> int:
    """``budget`` as an int, or an error naming it and the allowed range [1, num_tokens]."""
    message = f"budget={budget!r} must be an integer in [1, {num_tokens}] (the number of visual tokens)"
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise TypeError(message)
    if not 1 <= budget <= num_tokens:
        raise ValueError(message)
    return int(budget)
