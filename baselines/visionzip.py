"""VisionZip (Yang et al., CVPR 2025; official dvlab-research/VisionZip, training-free mode) as a pure
tensor function on one image's feature-layer tokens.

Official method (``visionzip/clip_encoder.py`` ``CLIPVisionTower_VisionZip.forward``, with
``visionzip(model, dominant, contextual)`` which stores ``dominant − 1``): at the feature layer
(CLIP-L layer −2),
1. dominant tokens: [CLS] plus the ``dominant − 1`` patch tokens with the largest [CLS] attention
   (the [CLS] row of that layer's attention, summed over heads), in their original order;
2. contextual tokens: the remaining patch tokens, in order, are compared by their keys (the layer's
   keys averaged over heads, L2-normalised); every ``step = max(1, M // contextual)``-th of the M
   remaining tokens is a target (the first ``contextual`` of them); every other remaining token is
   assigned to its most similar target (cosine, argmax), and each contextual token is the target's
   feature **plus** the mean feature of the tokens assigned to it (the official sum, not an average
   that includes the target);
3. output: [dominant (CLS first), contextual] — ``dominant + contextual`` tokens, CLS included, which
   the official code feeds to the projector and the LLM (LLaVA otherwise drops CLS).
Default split: 54 dominant + 10 contextual at 64 tokens, 108 + 20 at 128, 162 + 30 at 192 (the
README and paper), i.e. contextual = 10/64 of the budget (``contextual_ratio``).

Deviations, all written down:
- Towers without [CLS] (SigLIP, LLaVA-Video): the dominant score is the attention each token receives
  in the feature layer (mean over queries, summed over heads), as HoliTom's SigLIP port of VisionZip and
  EffiVLM-Bench do; every dominant token is then a patch token. Video: each frame of 729 SigLIP tokens
  is reduced on its own to ``budget`` tokens before the projector (no 2x2 pooling: the tokens are no
  grid), like EvoPrune's frames. HoliTom instead pools features, scores and keys 2x2 first and selects
  on the 13x13 grid.
- ``contextual`` for budgets the official code does not list: ⌊budget × contextual_ratio + 0.5⌋.
- The signals are recomputed from the feature layer's input (one [CLS] query or the layer's
  attention, and its keys) instead of being captured during the tower forward
  (``output_attentions=True`` on every layer in the official code), so they land in ``pruning``.
- Ties: the dominant top-k is a stable descending sort (lower index first); ``torch.topk`` in the
  official code leaves tie order to the kernel.
"""

from __future__ import annotations

import torch

from evoprune.merge import cosine_similarity


def contextual_count(budget: int, prefix: int, contextual_ratio: float) -> int:
    """Contextual tokens of a ``budget`` that also holds ``prefix`` kept [CLS] tokens."""
    return max(0, min(int(budget * contextual_ratio + 0.5), budget - prefix))


def visionzip_tokens(
    patches: torch.Tensor,
    prefix: torch.Tensor,
    importance: torch.Tensor,
    keys: torch.Tensor,
    dominant: int,
    contextual: int,
) -> torch.Tensor:
    """One image's VisionZip tokens: (P + dominant + contextual, C).

    patches (N, C): feature-layer patch tokens; prefix (P, C): [CLS] outputs kept in front (P = 0 or
    1); importance (N,): dominant score per patch token; keys (N, d): per-patch metric; dominant:
    patch tokens kept by score (besides the prefix); contextual: merged tokens.
    """
    count = patches.shape[0]
    if dominant < 0 or contextual < 0 or dominant + contextual > count:
        raise ValueError(f"dominant={dominant} + contextual={contextual} do not fit {count} patch tokens")
    # every index below is found on the device with a size known on the host: no host sync
    order = importance.float().argsort(descending=True, stable=True)
    parts = [prefix, patches[order[:dominant].sort().values]]  # dominant tokens, in their original order
    if contextual:
        rest = order[dominant:].sort().values  # the other patch tokens, ascending
        step = max(1, len(rest) // contextual)
        position = torch.arange(len(rest), device=patches.device)
        is_target = (position % step == 0) & (position < step * contextual)  # every step-th, contextual of them
        by_role = is_target.to(torch.uint8).argsort(stable=True)  # the others first, then the targets, ascending
        others, targets = by_role[: len(rest) - contextual], by_role[len(rest) - contextual :]
        metric = keys[rest].float()
        assign = cosine_similarity(metric[None, others], metric[None, targets])[0].argmax(dim=-1)
        hidden = patches[rest]
        sums = hidden.new_zeros(contextual, hidden.shape[-1]).index_add_(0, assign, hidden[others])
        counts = hidden.new_zeros(contextual).index_add_(0, assign, hidden.new_ones(len(others))).clamp(min=1)
        parts.append(hidden[targets] + sums / counts[:, None])
    return torch.cat(parts)
