"""DART (Wen et al. 2025, "Stop looking for important tokens in multimodal language models: duplication
matters more"): keep the visual tokens that duplicate the pivots least.

DART prunes inside the LLM, before decoder layer K (K = 2 for LLaVA-1.5). Pivots are the image tokens
whose layer-(K-1) keys have the largest L1 norm, plus as many text pivots: the tokens after the image
with the largest key L1 norm. Each pivot in turn picks, among the image tokens not yet kept, those whose
hidden state is least cosine-similar to its own; text pivots pick image tokens but are not kept. The
image pivots and everything picked are kept.

This module is only the selection: tensors in, image-token indices out. The caller extracts the inputs
(keys: layer K-1's post-RoPE keys, heads concatenated; hidden states: the model's final norm applied to
layer K-1's output) and rebuilds the sequence (kept tokens keep their original position ids).

Read from the official code: ZichenWen1/DART at 5a19452 (as stored in the fork xqy1111111/DART),
llava/model/language_model/modeling_llama_self.py: `DART.forward` (where and on what it prunes),
`DART.get_retained_image_token` (the selection), `LlamaDecoderLayer.forward` and the attention classes
(which keys come back as `layer_outputs[-2]`); llava/eval/model_vqa_loader.py (`configure_DART`,
defaults: 4 image pivots, 4 text pivots, image at position 35, max_num_trunction = 128).

Options (both reproduce the official code in one setting, and something else in the other):
- ``pivot_order="official"`` (default) visits the pivots as `get_retained_image_token` does: it takes the
  image pivots' absolute sequence positions (image start + index, in decreasing key L1 norm, the order of
  `topk`) followed by the text pivots' absolute positions (likewise), builds a Python ``set`` of that list
  and visits ``list(set)``. For ints that order is deterministic (hash(i) = i; it depends on the
  positions modulo the hash table's size and on insertion order only where two collide; the same on
  CPython 3.8 to 3.13 in 20,000 random cases), so it depends on where the image starts in the
  sequence. Image and text pivots share one queue: every pivot, of either kind, picks among the image
  tokens that no earlier pivot (of either kind) has kept.
  ``pivot_order="l1"``: image pivots by decreasing key L1 norm, then text pivots by decreasing key L1
  norm (the order of the list the official set is built from). On random inputs the two orders keep
  different token sets in most trials.
- ``count="exact"`` (default; the harness's budget is the number of image tokens the LLM sees) keeps
  exactly `budget`: the budget - num_pivots picks are split evenly over the pivots in visiting order, the
  first (budget - num_pivots) % (number of pivots) pivots picking one more. ``count="official"`` keeps
  what the official code keeps for ``max_num_trunction = budget``: every pivot picks
  ``TOKEN_TOPK = floor(budget / (pivot_image_token + pivot_text_token))``, so num_pivots + (number of
  pivots) * floor(budget / number of pivots) image tokens stay: 4 + 8 * floor(budget / 8) with the
  default pivots (128 -> 132, 31 -> 28). At budget = 4 + 8q both counts give every pivot q picks.

Deliberate deviations from the official code:
- Kept count. See ``count``: by default exactly `budget`, not 4 + 8 * floor(budget / 8).
- Visiting order. See ``pivot_order``: the official set order by default. The set is built from the
  positions the caller gives (`image_start`, `text_start`; `dart_prefill` passes the real ones); the
  official code takes the image start from its config (35, right for LLaVA-1.5's vicuna_v1 prompt with
  its system message), not from the input, so the orders agree only where the prompts do.
- Ties. Officially unstable `topk` in the model dtype (float16), and the candidates in Python set order.
  Here scores are float32 (or float64 for float64 inputs) and every sort is stable: equal key norms or
  equal similarities go to the lower index first.
- Cosine similarity is computed as normalize-then-dot with eps = 1e-8 per vector norm; the official
  `F.cosine_similarity` clamps the same norms, so only rounding differs.
- Fewer text tokens than `num_text_pivots`: all text tokens are pivots (the official `topk` raises);
  ``count="official"`` then divides the budget by the pivots there are. A kept count above the number of
  image tokens raises ValueError (the official `topk` raises too).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from evoprune.indexing import true_positions

_EPS = 1e-8
PIVOT_ORDERS = ("official", "l1")
COUNTS = ("exact", "official")


def check_options(pivot_order: str, count: str) -> None:
    """Reject a `pivot_order` or `count` that is not one of the accepted values (ValueError naming both)."""
    for name, value, accepted in (("pivot_order", pivot_order, PIVOT_ORDERS), ("count", count, COUNTS)):
        if not isinstance(value, str) or value not in accepted:
            raise ValueError(f"DART {name}={value!r} is not one of: {', '.join(map(repr, accepted))}")


def dart_select(
    image_keys: torch.Tensor,
    image_hidden: torch.Tensor,
    budget: int,
    num_pivots: int = 4,
    text_keys: torch.Tensor | None = None,
    text_hidden: torch.Tensor | None = None,
    num_text_pivots: int = 4,
    *,
    pivot_order: str = "official",
    count: str = "exact",
    image_start: int = 0,
    text_start: int | None = None,
) -> torch.Tensor:
    """Indices (ascending, int64, distinct) of the image tokens DART keeps: exactly `budget` with
    ``count="exact"``, num_pivots + P * floor(budget / P) with ``count="official"`` (P pivots visited).

    image_keys (N, Dk) and text_keys (T, Dk): layer K-1 keys, heads concatenated; image_hidden (N, C) and
    text_hidden (T, C): normed hidden states. text_* None means no text pivots. `image_start` and
    `text_start`: absolute sequence positions of the first image token and the first text token (default
    right after the image); only ``pivot_order="official"`` uses them. Batch size 1 only; assumes finite
    inputs.
    """
    check_options(pivot_order, count)
    budget = _check_inputs(image_keys, image_hidden, budget, num_pivots, text_keys, text_hidden, num_text_pivots)
    num_tokens = image_keys.shape[0]
    image_start, text_start = _check_positions(image_start, text_start, num_tokens)
    image_pivots = _largest_l1(image_keys, num_pivots)
    pivot_hidden = [image_hidden[image_pivots]]
    text_pivots = image_pivots[:0]
    if text_keys is not None:
        text_pivots = _largest_l1(text_keys, min(num_text_pivots, text_keys.shape[0]))
        pivot_hidden.append(text_hidden[text_pivots])
    pivot_hidden = torch.cat(pivot_hidden)
    num_visits = pivot_hidden.shape[0]
    if pivot_order == "official":
        pivot_hidden = pivot_hidden[_official_order(image_pivots, text_pivots, image_start, text_start)]
    if count == "exact":
        quotas = _quotas(budget - num_pivots, num_visits)
    else:
        quotas = [budget // num_visits] * num_visits
        if num_pivots + sum(quotas) > num_tokens:
            raise ValueError(
                f"count='official' keeps num_pivots + {num_visits} * floor(budget / {num_visits}) = "
                f"{num_pivots + sum(quotas)} image tokens at budget={budget}, more than the {num_tokens} there are"
            )
    similarity = _cosine(pivot_hidden, image_hidden)
    kept = torch.zeros(num_tokens, dtype=torch.bool, device=image_keys.device)
    kept[image_pivots] = True
    for row, quota in zip(similarity, quotas, strict=True):
        _pick_least_similar(row, kept, quota)
    return true_positions(kept, num_pivots + sum(quotas))  # every pick is a token not kept before


@torch.compiler.disable  # run by Python itself: dynamo's own set would not iterate in CPython's hash order
def _official_order(image_pivots: torch.Tensor, text_pivots: torch.Tensor, image_start: int, text_start: int):
    """Rows of cat(image pivots, text pivots) in the order the official code visits them: the order of a
    Python set built from the list of their absolute positions (image pivots first, each kind in `topk`
    order, i.e. decreasing key L1 norm). The positions are read on the host (one sync): a Python set orders them."""
    positions = torch.cat([image_pivots + image_start, text_pivots + text_start]).tolist()
    row_of = {position: row for row, position in enumerate(positions)}
    # a tensor, not a list: a compiled caller's graph would specialise on a list index's values
    return torch.tensor([row_of[position] for position in set(positions)], device=image_pivots.device)


def _check_positions(image_start, text_start, num_tokens) -> tuple[int, int]:
    """Both positions as ints (`text_start` defaults to right after the image), after checking that they
    place the text after the image."""
    image_start = _as_int("image_start", image_start)
    text_start = image_start + num_tokens if text_start is None else _as_int("text_start", text_start)
    if image_start < 0 or text_start < image_start + num_tokens:
        raise ValueError(
            f"need 0 <= image_start and text_start >= image_start + {num_tokens} (the text follows the image), "
            f"got image_start={image_start}, text_start={text_start}"
        )
    return image_start, text_start


def _as_int(name: str, value) -> int:
    """`value` as an int (a bool or a float is refused), or TypeError naming `name`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def _check_inputs(image_keys, image_hidden, budget, num_pivots, text_keys, text_hidden, num_text_pivots) -> int:
    """The budget as an int, after rejecting malformed arguments with a message naming them."""
    budget = _as_int("budget", budget)
    if image_keys.dim() != 2 or image_hidden.dim() != 2 or image_keys.shape[0] != image_hidden.shape[0]:
        raise ValueError(
            f"image_keys (N, Dk) and image_hidden (N, C) must be 2-D with the same N, got "
            f"{tuple(image_keys.shape)} and {tuple(image_hidden.shape)}"
        )
    num_tokens = image_keys.shape[0]
    if num_pivots < 1 or num_text_pivots < 0:
        raise ValueError(f"need num_pivots >= 1 and num_text_pivots >= 0, got {num_pivots} and {num_text_pivots}")
    if budget < num_pivots:
        raise ValueError(f"budget={budget} is below num_pivots={num_pivots}: DART always keeps its image pivots")
    if budget > num_tokens:
        raise ValueError(f"budget={budget} exceeds the {num_tokens} image tokens")
    if (text_keys is None) != (text_hidden is None):
        raise ValueError("text_keys and text_hidden must be given together")
    if text_keys is not None:
        _check_text(text_keys, text_hidden, image_keys.shape[1], image_hidden.shape[1])
    return budget


def _check_text(text_keys, text_hidden, key_dim, hidden_dim) -> None:
    """Reject text tensors whose shapes do not match the image tensors'."""
    if (
        text_keys.dim() != 2
        or text_hidden.dim() != 2
        or text_keys.shape[0] != text_hidden.shape[0]
        or text_keys.shape[0] == 0
        or text_keys.shape[1] != key_dim
        or text_hidden.shape[1] != hidden_dim
    ):
        raise ValueError(
            f"text_keys (T, {key_dim}) and text_hidden (T, {hidden_dim}) must be 2-D with the same T >= 1, got "
            f"{tuple(text_keys.shape)} and {tuple(text_hidden.shape)}"
        )


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 if it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _largest_l1(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` rows with the largest L1 norm, largest first; ties to the lower index."""
    norms = torch.linalg.vector_norm(_as_float(keys), ord=1, dim=-1)
    return torch.sort(norms, descending=True, stable=True).indices[:count]


def _cosine(queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(P, N) cosine similarity of every query row with every token row."""
    queries = F.normalize(_as_float(queries), dim=-1, eps=_EPS)
    tokens = F.normalize(_as_float(tokens), dim=-1, eps=_EPS)
    return queries @ tokens.T


def _quotas(total: int, num_pivots: int) -> list[int]:
    """`total` picks split evenly over `num_pivots` pivots, the first ones taking the remainder."""
    base, extra = divmod(total, num_pivots)
    return [base + (i < extra) for i in range(num_pivots)]


def _pick_least_similar(similarity: torch.Tensor, kept: torch.Tensor, quota: int) -> None:
    """Mark as kept the `quota` unkept tokens least similar to the pivot (ties to the lower index)."""
    available = similarity.masked_fill(kept, float("inf"))
    kept[torch.sort(available, stable=True).indices[:quota]] = True
