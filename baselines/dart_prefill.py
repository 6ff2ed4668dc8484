"""DART's LLM side: run the decoder's first K layers on the whole prompt, select image tokens with
`baselines.dart.dart_select`, and run the remaining layers on the kept tokens only.

As the official code (ZichenWen1/DART, ``modeling_llama_self.py``): the keys are layer K−1's
post-RoPE keys (read from the KV cache, heads concatenated), the hidden states the model's final
norm applied to layer K−1's output (scoring only; the un-normed states continue), kept tokens
keep their original position ids, layers below K cache the whole prompt and layers K and above
only the kept tokens. Decoding then continues at position S (the prompt length), which transformers
reads from layer 0's cache. Batch size one; one visual span, which may hold positions that are not
prunable (LLaVA-Video's newline embeddings: never pruned, kept in place like text). The "text" DART
draws its text pivots from is what follows the span; for ``pivot_order="official"`` an image token's
absolute position is taken as span start + its index among the prunable tokens, as the official code
computes it for a span with no other positions (it has no video path). Needs an attention
implementation that takes no explicit mask when decoding one token (sdpa, flash): eager attention
would build its decode mask from layer 0's longer cache.

Host reads (device syncs on a GPU), two per prefill: the image's count, first and last position together
(the text after the image is sliced by them), and with ``pivot_order="official"`` the pivots' positions
(the official order is a Python set's). Everything else stays on the device.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from baselines.dart import dart_select
from evoprune.indexing import true_positions

SUPPORTED_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")


def _causal_mask(length: int, like: torch.Tensor) -> torch.Tensor:
    """Additive (1, 1, length, length) causal mask in ``like``'s dtype and device."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=like.device).triu(1)
    return torch.zeros(length, length, dtype=like.dtype, device=like.device).masked_fill(
        blocked, torch.finfo(like.dtype).min
    )[None, None]


def _span(image_mask: torch.Tensor) -> tuple[int, int, int]:
    """(number of marked positions, the first, the last + 1), read on the host in one sync: the text after
    the image is sliced by it and the official pivot order is built from it. ValueError when none is marked."""
    marked = image_mask.to(torch.uint8)
    first = marked.argmax()  # the first maximum: the first marked position
    last = marked.shape[0] - 1 - marked.flip(0).argmax()
    count, start, stop = torch.stack([marked.sum(), first, last + 1]).tolist()
    if count == 0:
        raise ValueError("DART needs at least one image position in image_mask, it marks none")
    return count, start, stop


def _run_layers(layers, hidden, positions, cache, rotary):
    position_ids = positions[None]
    position_embeddings = rotary(hidden, position_ids=position_ids)
    mask = _causal_mask(hidden.shape[1], hidden)
    for layer in layers:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            position_embeddings=position_embeddings,
        )
    return hidden


def dart_prefill(
    language_model,
    inputs_embeds: torch.Tensor,
    image_mask: torch.Tensor,
    budget: int,
    layer: int = 2,
    num_pivots: int = 4,
    num_text_pivots: int = 4,
    pivot_order: str = "official",
    count: str = "exact",
) -> tuple[BaseModelOutputWithPast, int]:
    """Prefill ``language_model`` (a transformers LlamaModel / Qwen2Model) with DART pruning.

    Returns the model output (last hidden state of the kept sequence, the KV cache) and the
    number of image tokens kept (``budget`` with ``count="exact"``). ``pivot_order`` and ``count``:
    see `baselines.dart`; the official pivot order uses the image's and the text's absolute
    positions in this sequence.
    """
    implementation = language_model.config._attn_implementation
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"DART needs attention implementation in {SUPPORTED_ATTENTION}, the LLM uses {implementation!r}"
        )
    layers = language_model.layers
    if not 1 <= layer < len(layers):
        raise ValueError(f"dart layer={layer} must be in [1, {len(layers) - 1}] for a {len(layers)}-layer LLM")
    num_image, start, end = _span(image_mask)
    image_positions = true_positions(image_mask, num_image)

    length = inputs_embeds.shape[1]
    positions = torch.arange(length, device=inputs_embeds.device)
    cache = DynamicCache(config=language_model.config)
    hidden = _run_layers(layers[:layer], inputs_embeds, positions, cache, language_model.rotary_emb)

    keys = cache.layers[layer - 1].keys[0]  # (kv heads, S, head dim), post-RoPE
    keys = keys.transpose(0, 1).reshape(length, -1)
    normed = language_model.norm(hidden)[0]
    kept_image = dart_select(
        keys[image_positions],
        normed[image_positions],
        budget,
        num_pivots=num_pivots,
        text_keys=keys[end:],
        text_hidden=normed[end:],
        num_text_pivots=num_text_pivots,
        pivot_order=pivot_order,
        count=count,
        image_start=start,
        text_start=end,
    )
    kept = torch.ones(length, dtype=torch.bool, device=inputs_embeds.device)
    kept[image_positions] = False
    kept[image_positions[kept_image.to(image_positions.device)]] = True
    keep = true_positions(kept, length - num_image + len(kept_image))
    hidden = _run_layers(layers[layer:], hidden[:, keep], keep, cache, language_model.rotary_emb)
    output = BaseModelOutputWithPast(last_hidden_state=language_model.norm(hidden), cache=cache)
    return output, len(kept_image)
