"""Positions of a mask's True entries without reading the mask on the host (no device sync).

`mask.nonzero()` has a data-dependent size: on a GPU the host waits for the device to learn it. Where
the count is known on the host (from shapes, or read once with other values), a stable sort of ``~mask``
puts the True entries first, in their original order.
"""

from __future__ import annotations

import torch


def true_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Ascending indices of the True entries of the 1-D bool ``mask``, which must hold exactly ``count`` of
    them (not checked: that would read the mask; with fewer, False positions follow)."""
    return (~mask).to(torch.uint8).argsort(stable=True)[:count]
