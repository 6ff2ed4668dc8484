"""The FLOP model (matmul FLOPs, 2 per multiply-add) the benchmarks set their measured speedups beside:
encoder layers with merging, the projector, the LLM's decoder layers. Selection and merging work are not
counted."""

from __future__ import annotations

from evoprune.schedules import token_counts


def layer_flops(tokens: int, merged: int, width: int, mlp_width: int) -> float:
    """Multiply-adds × 2 of one encoder layer: q/k/v/out projections and attention on ``tokens``,
    the MLP on ``tokens − merged``."""
    projections = 4 * 2 * tokens * width * width
    attention = 2 * 2 * tokens * tokens * width
    mlp = 2 * 2 * (tokens - merged) * width * mlp_width
    return projections + attention + mlp


def encoder_flops(schedule: list[int], patches: int, prefix: int, width: int, mlp_width: int) -> float:
    """One image's (frame's) encoder layers, ``schedule[l]`` tokens merged at layer l."""
    counts = token_counts(patches, schedule)
    return sum(layer_flops(n + prefix, r, width, mlp_width) for n, r in zip(counts, schedule, strict=False))


def llm_layer_flops(seq: int, width: int, mlp_width: int, kv_width: int | None = None) -> float:
    """One decoder layer over ``seq`` tokens: q/o projections (2d²), k/v projections (2·d·d_kv; d_kv =
    d without grouped-query attention), the gated MLP (3·d·ff), attention scores and weighted sum (2·S²·d each)."""
    kv_width = width if kv_width is None else kv_width
    return 2 * seq * (2 * width * width + 2 * width * kv_width + 3 * width * mlp_width) + 4 * seq * seq * width


def llm_flops(
    seq: int,
    width: int,
    mlp_width: int,
    layers: int,
    pruned_seq: int | None = None,
    split: int = 0,
    kv_width: int | None = None,
) -> float:
    """The decoder's prefill: ``split`` layers over ``seq`` tokens, the rest over ``pruned_seq``
    (DART); without ``pruned_seq`` every layer over ``seq``."""
    if pruned_seq is None:
        pruned_seq, split = seq, layers
    full = llm_layer_flops(seq, width, mlp_width, kv_width)
    return split * full + (layers - split) * llm_layer_flops(pruned_seq, width, mlp_width, kv_width)


def projector_flops(tokens: int, vision_width: int, llm_width: int) -> float:
    """The 2-layer MLP projector (vision → LLM width → LLM width) on ``tokens`` tokens."""
    return 2 * tokens * (vision_width * llm_width + llm_width * llm_width)
