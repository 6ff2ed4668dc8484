"""VisPruner token selection (important + diverse tokens) as a pure tensor function.

Method (Zhang et al. 2025, "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token
Pruning in VLMs"; official code: github.com/Theia-4869/VisPruner, ``llava/model/llava_arch.py``
``encode_images``, inputs from ``llava/model/multimodal_encoder/clip_encoder.py`` ``feature_select``):

1. Important tokens: ⌊budget · important_ratio⌋ (Python ``int()``, as the official code) patch tokens
   with the largest head-averaged [CLS] attention of layer −2, exactly FasterVLM's criterion.
2. Diverse tokens: the rest of the budget, taken from the remaining tokens (kept in descending
   attention order) by rounds of similarity-based removal on the L2-normalised layer −2 features.
   Each round removes r = min(8, remaining − wanted) tokens: split the remaining list by position
   into an even side and an odd side, score each even-side token by its largest cosine similarity
   to the odd side, and drop the r highest-scoring even-side tokens. The next round's list is the
   surviving even-side tokens (by descending score) followed by the odd side (order unchanged);
   this order decides later splits, so it is reproduced exactly.
3. The kept tokens go to the LLM in spatial order (the official code applies a boolean mask).

Deliberate deviations from the official code:

- Loop bug: the official code sizes the surviving even side by ``R // 2`` (the odd side's length)
  instead of the even side's ``ceil(R / 2)``. With an odd-length remaining list it usually raises
  an IndexError (at 169 tokens per video frame for the paper's budgets 16, 32 and 64); when exactly
  one even-side token should survive, it drops that one too, returning budget − 1 tokens if that
  was the last round and the right count but a different set otherwise (e.g. N = 20, budget 6).
  When r exceeds the even side by two or more it raises a RuntimeError (e.g. budgets 1, 4, 8 of
  576). Here every surviving token is kept, as intended: a round drops min(r, even-side length)
  tokens, so exactly ``budget`` come back. Where the official loop hits none of these cases the
  kept sets are identical (checked in float64: every budget, N in {576, 169, 40, 20, 13, 9}, ratios
  0, 0.3, 0.5, 0.7, 1).
- Ties: the official code ranks with unstable ``argsort`` (float16 on GPU). Here every ranking is
  a stable descending sort: among equal attention the lower patch index is important first, and
  among equal similarity scores the earlier even-side position is dropped first.
- dtype: the attention is ranked exactly as given (see ``baselines.fastervlm``); the similarities
  are computed in float32 (float64 if given), not in the model's float16, so the float16 run's
  rounding ties do not occur. Because the survivors' order decides every later split, any rounding
  difference between two near-equal scores (even float32 with another summation order) can change
  the kept set; only computations at the same precision and order agree exactly.
- Zero feature vectors get similarity 0 (``F.normalize``) instead of the official NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.checks import check_budget
from baselines.fastervlm import attention_order, check_scores
from evoprune.device_checks import require

# Most tokens one round of the diverse loop removes (a constant of the official code).
MAX_REMOVED_PER_ROUND = 8


def check_features(features: torch.Tensor, num_tokens: int) -> None:
    """Reject anything but a finite, floating (N, C) feature matrix matching the N scores."""
    if features.ndim != 2 or features.shape[0] != num_tokens:
        raise ValueError(f"features must have shape ({num_tokens}, C), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating tensor, got {features.dtype}")
    require(torch.isfinite(features).all(), "features contain NaN or infinite values")


def removal_round(unit_features: torch.Tensor, remaining: torch.Tensor, num_removed: int) -> torch.Tensor:
    """One round: drop the ``num_removed`` even-position tokens most similar to the odd positions.

    ``remaining`` must hold at least two indices. Returns the surviving even-side indices by
    descending score, then the odd-side indices in their given order.
    """
    even, odd = remaining[0::2], remaining[1::2]
    redundancy = (unit_features[even] @ unit_features[odd].T).amax(dim=1)
    by_redundancy = torch.sort(redundancy, descending=True, stable=True).indices
    return torch.cat([even[by_redundancy[num_removed:]], odd])


def diverse_tokens(unit_features: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Shrink ``candidates`` (indices into ``unit_features``) to ``count`` tokens by removal rounds."""
    remaining = candidates
    while remaining.numel() > count:
        num_removed = min(MAX_REMOVED_PER_ROUND, remaining.numel() - count)
        remaining = removal_round(unit_features, remaining, num_removed)
    return remaining


def vispruner_select(
    cls_attention: torch.Tensor, features: torch.Tensor, budget: int, important_ratio: float = 0.5
) -> torch.Tensor:
    """Indices (ascending, int64) of the ``budget`` patch tokens VisPruner keeps.

    ``cls_attention``: (N,) head-averaged [CLS]→patch attention of layer −2 (no CLS column).
    ``features``: (N, C) layer −2 patch features, not normalised. Works on one image; batch by
    calling it per image.
    """
    check_scores(cls_attention)
    budget = check_budget(budget, cls_attention.numel())
    check_features(features, cls_attention.numel())
    if not 0.0 <= important_ratio <= 1.0:
        raise ValueError(f"important_ratio={important_ratio!r} must be in [0, 1]")

    num_important = int(budget * important_ratio)
    order = attention_order(cls_attention)
    important, candidates = order[:num_important], order[num_important:]
    if num_important == budget:
        return important.sort().values
    compute_dtype = torch.promote_types(features.dtype, torch.float32)
    unit_features = F.normalize(features.to(compute_dtype), dim=-1)
    diverse = diverse_tokens(unit_features, candidates, budget - num_important)
    return torch.cat([important, diverse]).sort().values
