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

Deliberate deviations from the official code:
- Kept count. Officially every pivot picks floor(budget / (image pivots + text pivots)) tokens, so
  4 + 8 * floor(budget / 8) image tokens stay (128 -> 132, 31 -> 28). Here exactly `budget` stay: the
  budget - num_pivots picks are split evenly over the pivots in visiting order, the first
  (budget - num_pivots) % (number of pivots) pivots picking one more. At budget = 4 + 8q every pivot
  picks q, as the official code does for a max_num_trunction of 8q.
- Visiting order. Officially the pivots are visited in Python set order of their absolute sequence
  positions, which depends on where the image starts. Here: image pivots by decreasing key L1 norm,
  then text pivots by decreasing key L1 norm (the order of the official list the set is built from).
- Ties. Officially unstable `topk` in the model dtype (float16). Here scores are float32 (or float64
  for float64 inputs) and every sort is stable: equal key norms or equal similarities go to the lower
  index first.
- Cosine similarity is computed as normalize-then-dot with eps = 1e-8 per vector norm; the official
  `F.cosine_similarity` clamps the same norms, so only rounding differs.
- Fewer text tokens than `num_text_pivots`: all text tokens are pivots (the official `topk` raises).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

_EPS = 1e-8


def dart_select(
    image_keys: torch.Tensor,
    image_hidden: torch.Tensor,
    budget: int,
    num_pivots: int = 4,
    text_keys: torch.Tensor | None = None,
    text_hidden: torch.Tensor | None = None,
    num_text_pivots: int = 4,
) -> torch.Tensor:
    """Indices (ascending, int64, distinct, exactly `budget`) of the image tokens DART keeps.

    image_keys (N, Dk) and text_keys (T, Dk): layer K-1 keys, heads concatenated; image_hidden (N, C) and
    text_hidden (T, C): normed hidden states. text_* None means no text pivots. Batch size 1 only;
    assumes finite inputs.
    """
    budget = _check_inputs(image_keys, image_hidden, budget, num_pivots, text_keys, text_hidden, num_text_pivots)
    image_pivots = _largest_l1(image_keys, num_pivots)
    pivot_hidden = [image_hidden[image_pivots]]
    if text_keys is not None:
        text_pivots = _largest_l1(text_keys, min(num_text_pivots, text_keys.shape[0]))
        pivot_hidden.append(text_hidden[text_pivots])
    similarity = _cosine(torch.cat(pivot_hidden), image_hidden)
    kept = torch.zeros(image_keys.shape[0], dtype=torch.bool, device=image_keys.device)
    kept[image_pivots] = True
    for row, quota in zip(similarity, _quotas(budget - num_pivots, similarity.shape[0]), strict=True):
        _pick_least_similar(row, kept, quota)
    return kept.nonzero().squeeze(1)


def _check_inputs(image_keys, image_hidden, budget, num_pivots, text_keys, text_hidden, num_text_pivots) -> int:
    """The budget as an int, after rejecting malformed arguments with a message naming them."""
    if isinstance(budget, bool):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    budget = operator.index(budget)
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
