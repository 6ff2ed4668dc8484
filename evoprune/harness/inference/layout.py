"""How a sample's projected visual tokens become the LLM's visual sequence: pooling and newlines.

Pure tensor functions. LLaVA-1.5 (``pool_stride: null``, ``newline: none``) feeds the kept tokens
of its one image as they are. LLaVA-Video's original path (LLaVA-NeXT ``get_2dPool`` with
``mm_spatial_pool_mode=average`` and ``add_token_per_grid``, ``mm_newline_position=grid``) pools
each frame's projected 27x27 grid with a 2x2 average (kernel = stride = 2, floor: 27 → 13, the last
row and column of patches dropped) and appends the learned newline embedding after every row of
every frame: 13 x 14 = 182 positions per frame.

Pruned tokens keep that layout: a post-encoder pruner selects cells of the pooled grid, and every
row still ends with its newline (rows left empty keep theirs: newlines are never pruned and never
counted in the budget). Tokens merged inside the encoder are no longer a grid; ``merged_newline``
says what replaces the per-row newlines for them: ``frame`` (one newline after each frame's
tokens) or ``none``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from evoprune.indexing import true_positions

NEWLINES = ("grid", "none")
MERGED_NEWLINES = ("frame", "none")


def grid_side(tokens: int) -> int:
    """Side of the square grid of ``tokens`` cells; ValueError when it is not a square."""
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} tokens per frame do not form a square grid")
    return side


def pool_grid(tokens: torch.Tensor, stride: int | None) -> torch.Tensor:
    """(F, N, C) tokens of an N = s x s grid → (F, ⌊s/stride⌋², C) by ``stride`` x ``stride`` averages.

    ``stride`` None returns ``tokens`` unchanged (LLaVA-1.5).
    """
    if stride is None:
        return tokens
    frames, count, channels = tokens.shape
    side = grid_side(count)
    grid = tokens.view(frames, side, side, channels).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(grid, stride)
    return pooled.permute(0, 2, 3, 1).reshape(frames, -1, channels)


def visual_sequence(
    tokens: torch.Tensor,
    keep: torch.Tensor | None,
    newline: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's visual sequence from (F, N, D) ``tokens``: (L, D) embeddings and an (L,) newline mask.

    ``keep``: (F, k) ascending indices into each frame's N tokens, or None for all. ``layout``:
    ``grid`` (a newline after every row of every frame; the tokens must be a square grid),
    ``frame`` (a newline after each frame) or ``none``. ``newline`` (D,) is required unless
    ``layout`` is ``none``.
    """
    frames, count, dim = tokens.shape
    if layout != "none" and newline is None:
        raise ValueError(f"layout {layout!r} needs a newline embedding; the model has none")
    kept = torch.ones(frames, count, dtype=torch.bool, device=tokens.device)
    if keep is not None:
        kept = torch.zeros_like(kept).scatter_(1, keep.to(tokens.device), True)
    if layout == "none":
        return _masked_rows(tokens, kept, torch.zeros_like(kept), frames * _per_frame(keep, count))
    if layout == "grid":
        side = grid_side(count)
        cells, cell_kept = tokens.view(frames, side, side, dim), kept.view(frames, side, side)
    elif layout == "frame":
        cells, cell_kept = tokens.view(frames, 1, count, dim), kept.view(frames, 1, count)
    else:
        raise ValueError(f"layout={layout!r} is not one of: grid, frame, none")
    rows = cells.shape[1]
    line = newline.to(tokens.dtype).expand(frames, rows, 1, dim)
    full = torch.cat([cells, line], dim=2)
    mask = torch.cat([cell_kept, cell_kept.new_ones(frames, rows, 1)], dim=2)
    is_newline = torch.zeros_like(mask)
    is_newline[..., -1] = True
    return _masked_rows(full, mask, is_newline, frames * (_per_frame(keep, count) + rows))


def _per_frame(keep: torch.Tensor | None, count: int) -> int:
    return count if keep is None else int(keep.shape[1])


def _masked_rows(values, mask, is_newline, length: int):
    """(values[mask], is_newline[mask]) without reading the mask on the host: its ``length`` True entries
    are known from the shapes."""
    rows = true_positions(mask.flatten(), length)
    return values.reshape(-1, values.shape[-1]).index_select(0, rows), is_newline.flatten().index_select(0, rows)
