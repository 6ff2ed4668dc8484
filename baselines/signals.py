"""Signals the post-encoder baselines need beyond LLaVA's normal forward, computed on demand.

Each is recomputed from tensors the normal forward already produced (the input of the encoder
layer that produces the features), so a pruner's extra cost is exactly what these functions cost
and lands in its own timed stage. Torch and transformers only; CLIP and SigLIP towers.
"""

from __future__ import annotations

import torch


def _layer_index(num_layers: int, feature_layer: int) -> int:
    """0-based index of the encoder layer whose output is ``hidden_states[feature_layer]``."""
    position = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 1 <= position <= num_layers:
        raise ValueError(f"feature_layer={feature_layer} does not name a layer output of a {num_layers}-layer encoder")
    return position - 1


def _queries_keys(vision_tower, layer_input: torch.Tensor, feature_layer: int, queries: slice):
    """The producing layer's per-head queries (rows ``queries``, pre-scaled) and keys: (B, H, q, d), (B, H, T, d)."""
    layers = vision_tower.encoder.layers
    layer = layers[_layer_index(len(layers), feature_layer)]
    attn = layer.self_attn
    normed = layer.layer_norm1(layer_input)
    batch = normed.shape[0]
    query = attn.q_proj(normed[:, queries]).view(batch, -1, attn.num_heads, attn.head_dim).transpose(1, 2)
    keys = attn.k_proj(normed).view(batch, -1, attn.num_heads, attn.head_dim).transpose(1, 2)
    return query * attn.scale, keys


def cls_attention(vision_tower, layer_input: torch.Tensor, feature_layer: int) -> torch.Tensor:
    """Attention of the CLS query over the patch tokens in the layer producing ``feature_layer``.

    ``layer_input``: (B, 1 + N, C), that layer's input (``hidden_states[feature_layer - 1]``).
    What ``output_attentions=True`` gives at ``attentions[feature_layer]`` (CLS row, patch columns),
    per head: (B, H, N), softmax over all keys (CLS included) as in the model. Only the CLS query
    is computed: one query projection and the key projection of the layer's input.
    """
    query, keys = _queries_keys(vision_tower, layer_input, feature_layer, slice(0, 1))
    probs = (query @ keys.transpose(-1, -2)).softmax(dim=-1, dtype=torch.float32)
    return probs[:, :, 0, 1:]


def received_attention(vision_tower, layer_input: torch.Tensor, feature_layer: int, chunk: int = 4) -> torch.Tensor:
    """Attention each token receives in the layer producing ``feature_layer``: (B, H, N), mean over queries.

    For towers without [CLS] (SigLIP): ``layer_input`` (B, N, C) is that layer's input; the softmax
    is the model's (over all N keys). ``chunk`` images at a time bound the (chunk, H, N, N)
    probabilities in memory (64 frames at once would hold 2.2 GB for SigLIP-so400m).
    """
    received = []
    for part in layer_input.split(chunk):
        query, keys = _queries_keys(vision_tower, part, feature_layer, slice(None))
        probs = (query @ keys.transpose(-1, -2)).softmax(dim=-1, dtype=torch.float32)
        received.append(probs.mean(dim=-2))
    return torch.cat(received)


def clip_image_embeds(clip_model, post_layernorm, features: torch.Tensor) -> torch.Tensor:
    """CLIP-space embeddings of patch features (N, C): the vision tower's post-layernorm (in the
    tower's dtype), then the CLIP visual projection in float32, as CDPruner does."""
    return clip_model.visual_projection(post_layernorm(features).float())


def clip_text_embeds(clip_model, tokenizer, text: str, chunk: int = 77) -> torch.Tensor:
    """CLIP text embeddings of ``text`` in ``chunk``-token pieces: (pieces, D), as CDPruner does.

    One tokenisation with the start and end tokens, cut into ``chunk``-token pieces, so only the
    first piece starts with BOS and only the last holds EOS; each piece's pooled output
    (transformers' CLIP pooling rule) through the text projection. CDPruner right-pads the last
    piece to ``chunk`` positions with a zero attention mask; it is run unpadded here, which gives
    the same pooled output (CLIP's text attention is causal, so no real position sees the padding)
    for a fraction of the cost.
    """
    ids = torch.tensor(tokenizer(text).input_ids, device=clip_model.text_projection.weight.device)
    full = len(ids) // chunk * chunk
    pieces = [ids[:full].view(-1, chunk)] if full else []
    if full < len(ids):
        pieces.append(ids[full:][None])
    pooled = torch.cat([clip_model.text_model(input_ids=piece).pooler_output for piece in pieces])
    return clip_model.text_projection(pooled)


def feature_layer_keys(vision_tower, layer_input: torch.Tensor, feature_layer: int) -> torch.Tensor:
    """Keys of the layer producing ``feature_layer``, averaged over heads: (B, T, head_dim), [CLS]
    included (VisionZip's metric: the official code keeps ``key_states.mean(1)`` of that layer)."""
    _, keys = _queries_keys(vision_tower, layer_input, feature_layer, slice(0, 0))
    return keys.mean(dim=1)
