"""Model surgery: install EvoPrune in a transformers CLIP or SigLIP vision tower, in place.

`patch` swaps the ``forward`` of the tower and of its encoder layers for EvoPrune's (instance
attributes, so other instances of the class are untouched) and `unpatch` restores them. A merge
layer computes its own attention (fused kernels; with attention preservation, the attention each
token receives comes from a second fused pass, `evoprune.attention`), merges between attention
and MLP (Alg. 1), and tracks token sizes and sources across layers. Layers before the first merge
run the original code unchanged, which makes ``budget`` = native token count an exact no-op.
Layers after the feature layer merge nothing (they still run, on the merged tokens).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from evoprune.attention import attention_with_importance
from evoprune.merge import SIM_TRANSFORMS, bipartite_match, merge_tokens, pair_scores
from evoprune.schedules import merge_schedule

METRICS = ("keys", "hidden")


@dataclass(frozen=True)
class EvoPruneOptions:
    """Every knob of the method; see `evoprune.merge` for what each term does.

    ctr: critical token ratio (paper: 0.25). k, tau, lambda_d: diversity term (the paper gives
    no values; K = 5 neighbours, τ = 1 on unit vectors, λ_d = 1 are this project's defaults).
    n, alpha: the first/last window and increasing/decreasing rate (paper: N = half the layers
    in Fig. 4, α = 1); n = None means half the counted layers. r: tokens merged per layer by the
    ``constant`` schedule (ToMe's r); None = the smallest constant r that reaches the budget.
    metric: "keys" (keys averaged over heads, as ToMe) or "hidden" (the layer's hidden states).
    prop_attn: add log(size) to attention logits (ToMe's proportional attention; the paper does not
    use it). keep_order: emit tokens sorted by their earliest source position.
    """

    ctr: float = 0.25
    k: int = 5
    tau: float = 1.0
    lambda_d: float = 1.0
    n: int | None = None
    alpha: float = 1.0
    r: int | None = None
    metric: str = "keys"
    sim_transform: str = "affine"
    use_attn: bool = True
    use_div: bool = True
    prop_attn: bool = False
    keep_order: bool = True

    def __post_init__(self):
        if not 0 <= self.ctr < 1:
            raise ValueError(f"ctr={self.ctr!r} must be in [0, 1)")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k={self.k!r} (diversity neighbours) must be an integer >= 1")
        if not self.tau > 0:
            raise ValueError(f"tau={self.tau!r} must be > 0")
        if self.r is not None and (isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1):
            raise ValueError(f"r={self.r!r} (tokens merged per layer by the constant schedule) must be >= 1 or null")
        if not self.lambda_d >= 0:
            raise ValueError(f"lambda_d={self.lambda_d!r} must be >= 0")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not one of: {', '.join(METRICS)}")
        if self.sim_transform not in SIM_TRANSFORMS:
            raise ValueError(f"sim_transform={self.sim_transform!r} is not one of: {', '.join(SIM_TRANSFORMS)}")


@dataclass
class _Runtime:
    """Per-forward merge state: None until the first merge of this forward."""

    size: torch.Tensor | None = None  # (B, T, 1) original tokens per mergeable token
    source: torch.Tensor | None = None  # (B, T) earliest original position


@dataclass
class _PatchInfo:
    budget: int
    schedule: list[int]
    options: EvoPruneOptions
    prefix_tokens: int  # CLS tokens kept out of merging (1 for CLIP, 0 for SigLIP)
    runtime: _Runtime = field(default_factory=_Runtime)


SUPPORTED = ("CLIPVisionModel", "SiglipVisionModel")


def _vision_transformer(vision_model):
    """The module holding ``encoder.layers`` (the model itself in transformers 5.x)."""
    name = type(vision_model).__name__
    if name not in SUPPORTED:
        raise TypeError(f"evoprune.patch does not support {name}; supported: {', '.join(SUPPORTED)}")
    return getattr(vision_model, "vision_model", vision_model)


def _counted_layers(num_layers: int, feature_layer: int) -> int:
    """Encoder layers whose output feeds ``hidden_states[feature_layer]``."""
    index = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 1 <= index <= num_layers:
        raise ValueError(f"feature_layer={feature_layer} does not name a layer output of a {num_layers}-layer encoder")
    return index


def _attention(attn, hidden: torch.Tensor, bias: torch.Tensor | None, need_importance: bool):
    """The layer's self-attention (fused kernels), also returning keys averaged over heads and, if asked,
    the attention each token receives (B, N), computed without the N×N probabilities (`evoprune.attention`)."""
    batch, tokens, _ = hidden.shape
    shape = (batch, tokens, attn.num_heads, attn.head_dim)
    q = attn.q_proj(hidden).view(shape).transpose(1, 2)
    k = attn.k_proj(hidden).view(shape).transpose(1, 2)
    v = attn.v_proj(hidden).view(shape).transpose(1, 2)
    if need_importance:
        out, importance = attention_with_importance(q, k, v, attn.scale, bias)
    else:
        out, importance = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale), None
    out = attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))
    return out, k.mean(dim=1), importance


def _size_bias(runtime: _Runtime, prefix: int, like: torch.Tensor) -> torch.Tensor:
    """log(size) per key, (B, 1, 1, N), prefix tokens at size 1."""
    log_size = runtime.size.log().squeeze(-1).to(like.dtype)
    log_size = F.pad(log_size, (prefix, 0))
    return log_size[:, None, None, :]


def _merge(info: _PatchInfo, x: torch.Tensor, metric: torch.Tensor, importance: torch.Tensor | None, r: int):
    options, prefix, runtime = info.options, info.prefix_tokens, info.runtime
    head, tokens = x[:, :prefix], x[:, prefix:]
    if runtime.size is None:
        batch, count = tokens.shape[:2]
        runtime.size = tokens.new_ones(batch, count, 1, dtype=torch.float32)
        runtime.source = torch.arange(count, device=x.device, dtype=torch.float32).expand(batch, count)
    scores = pair_scores(
        metric[:, prefix:],
        r,
        None if importance is None else importance[:, prefix:],
        ctr=options.ctr,
        k=options.k,
        tau=options.tau,
        lambda_d=options.lambda_d,
        use_div=options.use_div,
        sim_transform=options.sim_transform,
    )
    plan = bipartite_match(scores, r)
    merged, runtime.size, runtime.source = merge_tokens(
        tokens.float(), runtime.size, runtime.source, plan, options.keep_order
    )
    merged = merged.to(x.dtype)
    return torch.cat([head, merged], dim=1) if prefix else merged


def _layer_forward(self, hidden_states, attention_mask=None, **kwargs):
    info: _PatchInfo = self._evoprune_info
    r = self._evoprune_r
    runtime = info.runtime
    if r == 0 and runtime.size is None:
        return self._evoprune_forward(hidden_states, attention_mask, **kwargs)
    bias = None
    if info.options.prop_attn and runtime.size is not None:
        bias = _size_bias(runtime, info.prefix_tokens, hidden_states)
    if attention_mask is not None:
        bias = attention_mask if bias is None else attention_mask + bias
    residual = hidden_states
    hidden = self.layer_norm1(hidden_states)
    if r > 0:
        attended, keys, importance = _attention(self.self_attn, hidden, bias, info.options.use_attn)
        hidden_states = residual + attended
        metric = keys if info.options.metric == "keys" else hidden_states
        hidden_states = _merge(info, hidden_states, metric, importance, r)
    else:
        attended, _ = self.self_attn(hidden_states=hidden, attention_mask=bias, **kwargs)
        hidden_states = residual + attended
    return hidden_states + self.mlp(self.layer_norm2(hidden_states))


def _tower_forward(self, *args, **kwargs):
    self._evoprune_info.runtime = _Runtime()
    return self._evoprune_forward(*args, **kwargs)


def patch(vision_model, budget: int, schedule: str = "skip", feature_layer: int = -2, **options):
    """Make ``vision_model`` merge its patch tokens down to ``budget`` by ``feature_layer``.

    Accepts a transformers ``CLIPVisionModel`` / ``SiglipVisionModel`` (as LLaVA and
    LLaVA-OneVision hold them in ``model.model.vision_tower``). Afterwards
    ``hidden_states[feature_layer]`` holds ``budget`` patch tokens (+1 CLS for CLIP).
    ``options`` are `EvoPruneOptions` fields. Patching again replaces the previous patch.
    Returns ``vision_model``.
    """
    transformer = _vision_transformer(vision_model)
    if hasattr(vision_model, "_evoprune_info"):
        unpatch(vision_model)
    settings = EvoPruneOptions(**options)
    config = transformer.config
    native = (config.image_size // config.patch_size) ** 2
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= native:
        raise ValueError(f"budget={budget!r} must be an integer in [1, {native}] (the tower's patch tokens)")
    layers = transformer.encoder.layers
    counted = _counted_layers(len(layers), feature_layer)
    n = settings.n if settings.n is not None else max(1, counted // 2)
    per_layer = merge_schedule(schedule, native, budget, counted, n=n, alpha=settings.alpha, r=settings.r)
    per_layer += [0] * (len(layers) - counted)
    info = _PatchInfo(
        budget=budget,
        schedule=per_layer,
        options=settings,
        prefix_tokens=1 if type(vision_model).__name__.startswith("CLIP") else 0,
    )
    for layer, r in zip(layers, per_layer, strict=True):
        layer._evoprune_info, layer._evoprune_r = info, r
        _swap_forward(layer, _layer_forward)
    vision_model._evoprune_info = info
    _swap_forward(vision_model, _tower_forward)
    return vision_model


def _swap_forward(module, forward) -> None:
    """Install ``forward`` on this instance, remembering what was there (own or the class's)."""
    module._evoprune_own_forward = module.__dict__.get("forward")
    module._evoprune_forward = module.forward
    module.forward = types.MethodType(forward, module)


def _restore_forward(module) -> None:
    own = module._evoprune_own_forward
    if own is None:
        del module.forward
    else:
        module.forward = own
    del module._evoprune_own_forward, module._evoprune_forward


def unpatch(vision_model):
    """Undo `patch`; a model that was never patched is returned unchanged."""
    if not hasattr(vision_model, "_evoprune_info"):
        return vision_model
    for layer in _vision_transformer(vision_model).encoder.layers:
        _restore_forward(layer)
        del layer._evoprune_info, layer._evoprune_r
    _restore_forward(vision_model)
    del vision_model._evoprune_info
    return vision_model


def schedule_of(vision_model) -> list[int]:
    """Tokens merged at each encoder layer by the current patch."""
    info = getattr(vision_model, "_evoprune_info", None)
    if info is None:
        raise ValueError(
            f"this {type(vision_model).__name__} is not patched: evoprune.patch(vision_model, budget) first "
            "(for a whole LLaVA, evoprune.hf.patch_llava(model, processor, budget))"
        )
    return list(info.schedule)
