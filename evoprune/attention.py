"""Fused attention that also yields the attention each key receives, without the N×N probabilities.

EvoPrune's importance of key j is s_j = mean over heads h and queries i of p_hij, p = softmax(q kᵀ·scale
+ bias). Materialising p costs a (B, H, N, N) buffer written and read several times per merge layer. Here:

1. the layer's attention runs fused (flash / memory-efficient kernels, or PyTorch's CPU flash kernel),
   which also returns each query's log-sum-exp lse_i = log Σ_j exp(l_ij);
2. a second fused pass with queries and keys swapped, every former query offset by −lse_i, has as
   its own log-sum-exp, for each key j, log Σ_i exp(l_ij − lse_i) = log Σ_i p_ij: the column sum.

Both passes are attention kernels (no N×N buffer in memory); the second's output is discarded. A
bias that depends on the key only (ToMe's proportional attention, shape (…, 1, N)) is constant along
each swapped row, so it is added to the column log-sum-exp instead of to the logits. Any other bias,
or a device without such a kernel, takes `explicit_attention`, the plain formula (also the reference
in the tests). The kernels are private aten ops (``_scaled_dot_product_*``), stable since torch 2.2.

In half precision the −lse offset is rounded to the input dtype after centring on its per-head
maximum (an error of about 2⁻¹¹ × the spread of lse within a head, like the rounding of the logits).

On a CPU the explicit formula is the default: there arithmetic, not kernel launches or memory traffic,
sets the time, and the swapped pass is a second attention's worth of it, while the explicit formula
reads the probabilities it already computed for the output (2 cores, float32, EvoPrune at 64 tokens,
forwards alternating, min of 5: CLIP-L/336 on one image 1054 ms explicit, 1102 ms fused; SigLIP-so400m on
8 frames, min of 3: 14.08 s and 14.04 s, even). `fused_on_cpu` takes the fused passes there too: to count
the ops a GPU would launch, and to test them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from evoprune.merge import attention_importance

_aten = torch.ops.aten
_FUSED_ON_CPU = False  # a plain global, not a context variable: dynamo traces reading it (and guards on it)


@contextmanager
def fused_on_cpu() -> Iterator[None]:
    """Inside: CPU tensors take the fused passes too (the GPU's path), not the explicit formula."""
    global _FUSED_ON_CPU
    before, _FUSED_ON_CPU = _FUSED_ON_CPU, True
    try:
        yield
    finally:
        _FUSED_ON_CPU = before


def explicit_attention(q, k, v, scale: float, bias=None):
    """(out, importance) from the materialised probabilities: softmax in float32 as transformers' eager."""
    logits = (q * scale) @ k.transpose(-1, -2)
    if bias is not None:
        logits = logits + bias
    probs = logits.softmax(dim=-1, dtype=torch.float32)
    out = probs.to(q.dtype) @ v
    return out, attention_importance(probs)


def _is_key_bias(bias, q) -> bool:
    """None, or one value per key: shape (B or 1, 1, 1, Nk)."""
    return bias is None or (bias.dim() == 4 and bias.shape[1:3] == (1, 1) and bias.shape[0] in (1, q.shape[0]))


def _fused_with_lse(q, k, v, scale: float, bias):
    """(out, lse (B, H, Nq) float32) from a fused kernel, or None when this device has none.

    ``bias``: None or shape (B or 1, H or 1, 1, Nk), broadcast over the queries.
    """
    if q.device.type == "cpu":
        return _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias, scale=scale)
    if q.device.type != "cuda":
        return None
    if bias is None and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0:
        return _aten._scaled_dot_product_flash_attention(q, k, v, scale=scale)[:2]
    if bias is not None:
        bias = _aligned_bias(bias.to(q.dtype), q.shape[0], q.shape[1], q.shape[2])
    out, lse = _aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, scale=scale)[:2]
    return out, lse[..., : q.shape[2]]


def _aligned_bias(bias, batch: int, heads: int, queries: int):
    """(B, H, Nq, Nk) view of a per-key bias whose rows start 16-element aligned (the memory-efficient
    kernel's rule; PyTorch's public SDPA pads the same way)."""
    keys = bias.shape[-1]
    storage = bias.new_zeros(batch, heads, 1, -(-keys // 16) * 16)
    storage[..., :keys] = bias
    return storage[..., :keys].expand(batch, heads, queries, keys)


def attention_with_importance(q, k, v, scale: float, bias=None):
    """Attention output (B, H, Nq, D) and the attention each key receives, (B, Nk) float32.

    q, k, v: (B, H, N, D); bias: None, or additive, broadcastable to (B, H, Nq, Nk).
    """
    explicit = q.device.type == "cpu" and not _FUSED_ON_CPU
    fused = None if explicit or not _is_key_bias(bias, q) else _fused_with_lse(q, k, v, scale, bias)
    if fused is None:
        return explicit_attention(q, k, v, scale, bias)
    out, lse = fused
    return out, _received(q, k, lse, scale, bias)


def _received(q, k, lse, scale: float, bias):
    """mean over heads and queries of the probabilities, from the rows' log-sum-exp (see the module doc).

    The swapped pass offsets former query i by c − lse_i − log Nq, so its log-sum-exp for key j is
    log(mean_i p_ij) + c; c = 0 in float32, the per-head maximum of lse where the offset is rounded.
    """
    log_queries = math.log(q.shape[2])
    if q.dtype == torch.float32:
        centre, offset = None, torch.rsub(lse, -log_queries)
    else:
        centre = lse.amax(dim=-1, keepdim=True)
        offset = ((centre - log_queries) - lse).to(q.dtype)
    _, column_lse = _fused_with_lse(k, q, q, scale, offset[:, :, None, :])
    if centre is not None:
        column_lse = column_lse - centre
    if bias is not None:  # constant along each swapped row: it shifts that row's log-sum-exp
        column_lse = column_lse + bias.reshape(bias.shape[0], 1, -1).float()
    return column_lse.exp().mean(dim=1)
