"""Score-guided bipartite token merging (paper §3.3–3.4) as pure tensor functions.

Everything here works on batches: ``(B, T, ·)`` tensors of the T mergeable tokens of each image
(patch tokens, in their current order; a CLS token is kept out by the caller), and every image
merges the same ``r`` tokens so the batch stays rectangular. No model code is imported here.

Score_ij = Sim_ij × w_div_ij, with the attention preservation applied as a mask:
- Sim: cosine similarity of the metric vectors (keys averaged over heads by default, as ToMe).
  The paper says Sim ∈ [0, 1]; cosine is in [−1, 1], and multiplying a negative similarity by
  w_div ≤ 1 would *raise* it. ``sim_transform="affine"`` (default) uses (1 + cos) / 2 so the
  diversity penalty always lowers a pair's score; ``"none"`` keeps raw cosine (the literal text).
- w_div = exp(−λ_d (d_i + d_j)), d_i = 1 − mean_{k ∈ kNN(i)} exp(−‖v_i − v_k‖² / τ²), with v the
  L2-normalised metric vectors, so ‖v_i − v_k‖² = 2 − 2 cos ∈ [0, 4] and τ is scale-free.
- Attention preservation: importance s_i = attention token i RECEIVES (mean over heads and
  queries: a column mean; the printed row mean of a softmax is constant), top
  N_protect = min(⌊CTR·T⌋, T − 2r) tokens protected. Instead of multiplying by −∞ (wrong when
  Sim ≤ 0), a pair loses `PROTECT_PENALTY` × the protection levels of its members (1 for the
  least important protected token … N_protect for the most important): protected pairs rank
  below every unprotected pair, which equals the paper's −∞ mask whenever r unprotected
  a-tokens with an unprotected partner exist; when they do not (protected tokens crowding the
  a-side, possible since N_protect ≤ T − 2r bounds only the total), the least important
  protections are broken first instead of an arbitrary partner being taken.
Ties (equal scores) go to the lower index: sorts are stable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIM_TRANSFORMS = ("affine", "none")
# Scores lie in [-1, 1] (cosine times a weight in (0, 1]); a step of 4 puts each level below the last.
PROTECT_PENALTY = 4.0


@dataclass(frozen=True)
class MergePlan:
    """Indices into the a-side (even positions) and b-side (odd positions) of the tokens."""

    src: torch.Tensor  # (B, r) a-tokens merged away
    dst: torch.Tensor  # (B, r) their b-partners
    unmerged: torch.Tensor  # (B, |a| - r) a-tokens kept


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, Na, C) × (B, Nb, C) → (B, Na, Nb) cosine similarities."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)


def local_density(vectors: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """d_i = 1 − mean over the K nearest neighbours of exp(−‖v_i − v_k‖² / τ²), on normalised v.

    (B, T, C) → (B, T). K is capped at T − 1; a single token has density 0.
    """
    if min(k, vectors.shape[1] - 1) < 1:
        return vectors.new_zeros(vectors.shape[:2])
    unit = F.normalize(vectors.float(), dim=-1)
    return (1.0 - _neighbour_closeness(_log_kernel(unit, tau), k)).to(vectors.dtype)


def _log_kernel(unit: torch.Tensor, tau: float) -> torch.Tensor:
    """(B, T, T) −‖v_i − v_j‖² / τ² = (cos − 1) · 2 / τ² of unit vectors, in one fused matmul."""
    scale = 2.0 / tau**2
    return torch.baddbmm(unit.new_full((1, 1, 1), -scale), unit, unit.transpose(-1, -2), alpha=scale)


def _neighbour_closeness(log_kernel: torch.Tensor, k: int) -> torch.Tensor:
    """1 − d: mean over the K nearest of exp(−‖v_i − v_k‖² / τ²): the K + 1 largest of a row, less the
    largest (the token itself, or a duplicate of it with the same value). K is capped at T − 1 ≥ 1."""
    nearest = log_kernel.topk(min(k, log_kernel.shape[-1] - 1) + 1, dim=-1).values[..., 1:]
    return nearest.exp().mean(-1)


def attention_importance(probs: torch.Tensor) -> torch.Tensor:
    """Attention each token receives: (B, H, Nq, Nk) softmax rows → (B, Nk), mean over H and Nq."""
    return probs.mean(dim=(1, 2))


def protection_levels(importance: torch.Tensor, ctr: float, r: int) -> torch.Tensor:
    """(B, T): 0 for unprotected tokens; the top N_protect = min(⌊CTR·T⌋, T − 2r) tokens by
    importance get N_protect (the most important) down to 1 (the least important protected)."""
    tokens = importance.shape[-1]
    count = max(0, min(int(ctr * tokens), tokens - 2 * r))
    order = importance.argsort(dim=-1, descending=True, stable=True)[:, :count]
    levels = torch.arange(count, 0, -1, device=importance.device, dtype=torch.float32).expand(order.shape)
    return torch.zeros(importance.shape, device=importance.device).scatter_(-1, order, levels)


def pair_scores(
    metric: torch.Tensor,
    r: int,
    importance: torch.Tensor | None = None,
    *,
    ctr: float = 0.25,
    k: int = 5,
    tau: float = 1.0,
    lambda_d: float = 1.0,
    use_div: bool = True,
    sim_transform: str = "affine",
) -> torch.Tensor:
    """Score of merging each a-token (even position) into each b-token (odd): (B, |a|, |b|).

    ``importance`` (B, T) switches attention preservation on; None leaves it off.
    """
    if sim_transform not in SIM_TRANSFORMS:
        raise ValueError(f"sim_transform={sim_transform!r} is not one of: {', '.join(SIM_TRANSFORMS)}")
    unit = F.normalize(metric.float(), dim=-1)
    affine = sim_transform == "affine"
    if use_div and metric.shape[1] > 1:
        log_kernel = _log_kernel(unit, tau)
        # exp(−λ_d (d_a + d_b)) = w_a · w_b, w = exp(−λ_d d) = exp(λ_d (closeness − 1))
        weight = torch.exp(_neighbour_closeness(log_kernel, k) * lambda_d - lambda_d)
        pair_weight = weight[:, ::2, None] * weight[:, None, 1::2]
        # cos = log_kernel · τ²/2 + 1, so (1 + cos)/2 · w = w + w · log_kernel · τ²/4 (affine)
        # and cos · w = w + w · log_kernel · τ²/2 (none): one fused multiply-add
        cos_step = tau**2 / 4.0 if affine else tau**2 / 2.0
        scores = torch.addcmul(pair_weight, log_kernel[:, ::2, 1::2], pair_weight, value=cos_step)
    else:
        scores = unit[:, ::2] @ unit[:, 1::2].transpose(-1, -2)
        if affine:
            scores = (scores + 1.0) * 0.5
    if importance is not None:
        levels = protection_levels(importance, ctr, r)
        scores = torch.sub(scores, levels[:, ::2, None] + levels[:, None, 1::2], alpha=PROTECT_PENALTY)
    return scores


def bipartite_match(scores: torch.Tensor, r: int) -> MergePlan:
    """Each a-token's best b-partner; the r a-tokens with the highest best scores merge."""
    a_count = scores.shape[1]
    if not 0 <= r <= min(a_count, scores.shape[2]):
        raise ValueError(f"r={r} merges need at most min(|a|, |b|) = {min(a_count, scores.shape[2])}")
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :r]
    return MergePlan(src=src, dst=partner.gather(-1, src), unmerged=order[:, r:])


def merge_tokens(
    x: torch.Tensor, size: torch.Tensor, source: torch.Tensor, plan: MergePlan, keep_order: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``plan``: size-weighted average of each merged a-token into its b-partner.

    x (B, T, C) tokens, size (B, T, 1) how many original tokens each one stands for, source
    (B, T) the earliest original position each one covers. Returns the three for T − r tokens,
    sorted by ``source`` when ``keep_order`` (else: unmerged a-tokens first, then b-tokens).
    Σ size·x over the tokens is unchanged.
    """
    channels, tokens = x.shape[-1], x.shape[1]
    # one float tensor per token: Σ size·x, size, source (exact as float up to 2^24 positions)
    packed = torch.cat([x * size, size, source.to(size.dtype)[..., None]], dim=-1)
    a, b = packed[:, ::2], packed[:, 1::2]
    moved = a.gather(1, _rows(plan.src, channels + 2))
    b[..., : channels + 1].scatter_reduce_(1, _rows(plan.dst, channels + 1), moved[..., :-1], reduce="sum")
    b[..., -1].scatter_reduce_(1, plan.dst, moved[..., -1], reduce="amin")
    if keep_order:
        a[..., -1].scatter_(1, plan.src, float("inf"))  # merged a-tokens sort last, then are cut
        order = packed[..., -1].argsort(dim=-1, stable=True)[:, : tokens - plan.src.shape[1]]
    else:
        b_positions = torch.arange(1, tokens, 2, device=x.device).expand(x.shape[0], -1)
        order = torch.cat([2 * plan.unmerged, b_positions], dim=1)
    kept = packed.gather(1, _rows(order, channels + 2))
    size = kept[..., channels : channels + 1]
    return kept[..., :channels] / size, size, kept[..., -1].to(source.dtype)


def _rows(index: torch.Tensor, width: int) -> torch.Tensor:
    """(B, N) token indices as a (B, N, width) gather/scatter index."""
    return index.unsqueeze(-1).expand(-1, -1, width)
