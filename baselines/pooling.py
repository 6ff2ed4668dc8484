"""Spatial pooling, the sanity floor of token reduction: average-pool each frame's patch grid.

The tower's feature-layer patch grid (24x24 for CLIP-L/336, 27x27 for SigLIP-so400m/384) is average
pooled (``adaptive_avg_pool2d``: windows of ⌈s/g⌉ or ⌊s/g⌋ patches) down to the square g x g grid
nearest the budget (by token count, ties to the smaller): 64 → 8x8, 128 → 11x11 = 121, 192 → 14x14 =
196, 32 → 6x6 = 36, 16 → 4x4. The runs record the tokens the LLM really receives. Pooling happens
before the projector, so the projector runs on g² tokens; LLaVA-Video's own 2x2 pooling (after the
projector, 27 → 13 with the last row and column dropped) is replaced, and the g x g grid gets the
model's newline after every row. At g = the tower's side the pooling is the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nearest_square_side(budget: int) -> int:
    """The side g whose g² is nearest ``budget`` (ties to the smaller)."""
    low = math.isqrt(budget)
    return low if budget - low * low <= (low + 1) ** 2 - budget else low + 1


def pool_patch_grid(features: torch.Tensor, side: int) -> torch.Tensor:
    """(F, s², C) patch tokens of an s x s grid → (F, side², C) raster-order averages."""
    frames, count, channels = features.shape
    grid = math.isqrt(count)
    if grid * grid != count:
        raise ValueError(f"{count} patch tokens per frame do not form a square grid")
    if not 1 <= side <= grid:
        raise ValueError(f"a {side}x{side} grid cannot be pooled from a {grid}x{grid} grid")
    pooled = F.adaptive_avg_pool2d(features.transpose(1, 2).reshape(frames, channels, grid, grid), side)
    return pooled.flatten(2).transpose(1, 2)
