"""DivPrune (Alvar et al., CVPR 2025): keep the most diverse visual tokens, as pure tensor functions.

Read from the official code, vbdi/divprune, ``LLaVA/llava/model/llava_arch.py``
(``pairwise_cosine_similarity``, ``DivPrune`` and its call in ``prepare_inputs_labels_for_multimodal``).
It works on the N projected visual embeddings (the image tokens after LLaVA's multimodal projector,
as they sit in the LLM's input sequence). Distance d(i, j) = 1 − cos(x_i, x_j). A max-min
diversity greedy:

- first pick: the token whose nearest neighbour is farthest, argmax_j min_{i≠j} d(i, j) (the official
  code takes the second smallest entry of each column of d, the smallest being the token itself);
- then, repeatedly, the token whose minimum distance to the tokens picked so far is largest.

The kept tokens go back in their original order (the official code sorts the kept positions).

Deliberate deviations from the official code:

- Count: the official keeps ``int(round(ratio · N))`` tokens (banker's rounding); here ``budget`` is
  the count itself.
- Duplicates: the official does not exclude picked tokens, so once every remaining token duplicates a
  picked one (all scores 0) ``argmax`` returns a picked token again and the same token is kept twice.
  Here picked tokens are excluded, so exactly ``budget`` distinct indices come back; the results agree
  whenever the official's picks are distinct.
- Self-distance: the official's "second smallest in the column" equals the nearest-neighbour distance
  only when the diagonal 1 − cos(x, x) rounds to the column's minimum; here the diagonal is masked out.
- dtype: the official runs in the model dtype (float16); here distances are float32 (float64 for
  float64 input), so float16 rounding ties the official would break arbitrarily mostly do not arise.
- Ties: go to the lowest index (``torch.argmax`` returns the first maximum, as in the official).

It cannot handle zero feature vectors meaningfully: they are treated as orthogonal to every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.checks import check_budget


def cosine_distance(features: torch.Tensor) -> torch.Tensor:
    """(N, C) → (N, N) matrix of 1 − cosine similarity, in float32 (float64 kept)."""
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    unit = F.normalize(features.to(dtype), dim=-1)
    return 1.0 - unit @ unit.T


def divprune_order(features: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the ``budget`` tokens DivPrune keeps, in the order it picks them."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
    tokens = features.shape[0]
    budget = check_budget(budget, tokens)
    distance = cosine_distance(features)
    nearest = distance.clone().fill_diagonal_(float("inf")).amin(dim=0)
    # picks stay (1,) tensors: indexing with them never reads their value on the host (a 0-dim one would)
    first = torch.argmax(nearest, dim=0, keepdim=True)
    order = torch.empty(budget, dtype=torch.long, device=features.device)
    order[:1] = first
    picked = torch.zeros(tokens, dtype=torch.bool, device=features.device)
    picked[first] = True
    to_picked = distance[first][0]
    for step in range(1, budget):
        choice = torch.argmax(to_picked.masked_fill(picked, float("-inf")), dim=0, keepdim=True)
        order[step : step + 1] = choice
        picked[choice] = True
        to_picked = torch.minimum(to_picked, distance[choice][0])
    return order


def divprune_select(features: torch.Tensor, budget: int) -> torch.Tensor:
    """Ascending indices of the ``budget`` distinct tokens of ``features`` (N, C) that DivPrune keeps."""
    return divprune_order(features, budget).sort().values
