"""FasterVLM token selection ([CLS] attention top-k) as a pure tensor function.

Method (Zhang et al. 2024, "[CLS] Attention is All You Need for Training-Free Visual Token Pruning";
official code: github.com/Theia-4869/FasterVLM, ``llava/model/multimodal_encoder/clip_encoder.py``
``feature_select`` and ``llava/model/llava_arch.py`` ``encode_images``): take the attention of the
CLIP layer that also gives the features (``mm_vision_select_layer`` = −2, the penultimate layer),
keep the [CLS] query row and the patch columns (``attentions[-2][:, :, 0, 1:]``), average over
heads, keep the ``budget`` patch tokens with the largest score and drop the rest before the
projector output reaches the LLM (a boolean mask, so the kept tokens stay in spatial order).

The caller does the head mean; this module only ranks. Deliberate deviations from the official code:

- Ties: the official code uses ``torch.topk``, whose order among equal scores is whatever the
  kernel gives. Here the ranking is a stable descending sort: among equal scores the lower patch
  index is kept first.
- dtype: the official code casts the attention to float16 (``.to(images.dtype)``) before the head
  mean, which creates ties. No cast happens here: the scores are ranked exactly as given, so a
  float16 model that averages in float16 reproduces that rounding, and a float32 run keeps its
  finer ranking. The official rounding depends on the GPU's reduction order, which a cast here
  could not reproduce anyway.
"""

from __future__ import annotations

import torch

from baselines.checks import check_budget
from evoprune.device_checks import require


def check_scores(cls_attention: torch.Tensor) -> None:
    """Reject anything but a non-empty, finite, floating (N,) score vector."""
    if cls_attention.ndim != 1 or cls_attention.numel() == 0:
        raise ValueError(f"cls_attention must have shape (N,) with N >= 1, got {tuple(cls_attention.shape)}")
    if not cls_attention.is_floating_point():
        raise TypeError(f"cls_attention must be a floating tensor, got {cls_attention.dtype}")
    require(torch.isfinite(cls_attention).all(), "cls_attention contains NaN or infinite values")


def attention_order(cls_attention: torch.Tensor) -> torch.Tensor:
    """All patch indices by descending score; equal scores keep the lower index first (stable sort)."""
    return torch.sort(cls_attention, descending=True, stable=True).indices


def fastervlm_select(cls_attention: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices (ascending, int64) of the ``budget`` patch tokens with the largest [CLS] attention.

    ``cls_attention``: (N,) head-averaged [CLS]→patch attention of layer −2 (no CLS column).
    Works on one image; batch by calling it per image.
    """
    check_scores(cls_attention)
    budget = check_budget(budget, cls_attention.numel())
    return attention_order(cls_attention)[:budget].sort().values
