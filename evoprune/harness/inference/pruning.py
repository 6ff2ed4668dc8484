"""The `Pruner` contract the inference pipeline calls, and `build_pruner`, which builds one from its config.

A pruner config (configs/pruner/*.yaml, or any folder on ``hydra.searchpath``) names its class with
``_target_`` (a `Pruner` subclass, importable: this repo's or any package's), the run's ``name`` and the
method family ``method``; its other fields are the class's keyword arguments. Every hook is optional:
the base class is the native, unpruned model (``pruner=none``). Per sample the pipeline calls
``reduce``, then the projector (and the model's pooling), then ``select``, then ``prefill``.

- ``__init__(budget, **options)``: ``budget`` = visual tokens per image or per video frame (None =
  keep all). Raise ValueError on a bad option: it is reported as a config error before any model loads.
- ``attach(model)`` / ``detach(model)``: patch the HF model (LLaVA-1.5's `LlavaForConditionalGeneration`,
  LLaVA-Video's `LlavaOnevisionForConditionalGeneration`) before a run's samples and restore it exactly
  after (the runs of a sweep share one loaded model). In-encoder methods (EvoPrune, ToMe) act here.
- ``reduce(tokens)`` → (F, k, vision_hidden) tensor or None, once per sample right after the encoder,
  before the projector, timed as ``pruning``: new feature-layer tokens replacing the tower's
  (`VisualTokens` without ``projected``). They are projected but never pooled by the model, and laid
  out like in-encoder merged tokens (the model's ``merged_newline``), or with the model's grid
  newlines when ``reduced_grid`` is True (a square grid in raster order). Methods that build new
  tokens (VisionZip's merging, spatial pooling) act here.
- ``select(tokens)`` → (F, k) integer tensor or None, once per sample after the projector, timed as
  ``pruning``: `VisualTokens` of the sample's F frames (F = 1 for an image): ``projected`` (F, S, D) the
  candidates on the grid the LLM receives (S = 576 for LLaVA-1.5, the pooled 169 for LLaVA-Video),
  the tower's ``features`` and ``layer_input`` unpooled, the question, the sample's id. Return each
  frame's kept indices, strictly ascending, or None to keep all.
- Both return exactly ``tokens_per_frame`` tokens per frame (``budget`` unless the class says
  otherwise); `check_reduction` / `check_selection` enforce the contract for every pruner.
- ``prefill(language_model, inputs_embeds, image_mask, frames)``: run the LLM over the whole prompt
  (``inputs_embeds`` (1, L, D); ``image_mask`` (L,) marks the F frames' prunable visual positions,
  newlines not marked) and return (output with its KV cache, visual tokens the LLM kept); timed as
  ``prefill``. LLM-side methods (DART) act here.
- ``in_encoder = True`` makes ``budget`` count the tower's patch tokens per frame (576, 729) instead
  of the tokens the LLM receives. Newline embeddings are laid out after selection, never candidates.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from evoprune.device_checks import require
from evoprune.harness.common.errors import ConfigError
from evoprune.harness.inference.layout import pool_grid


@dataclass
class VisualTokens:
    """What the encoder produced for one sample's F frames.

    ``projected`` is on the grid the LLM receives (pooled when the model pools); ``features`` and
    ``layer_input`` are the tower's own tokens, unpooled: `to_llm_grid` maps a per-token signal
    onto the LLM's grid the way the model pools its tokens.
    """

    features: torch.Tensor  # (F, N, vision_hidden) feature-layer patch tokens ([CLS] removed)
    projected: torch.Tensor | None  # (F, S, llm_hidden) after the projector (and pooling); None in `reduce`
    prompt: str  # the question text, for query-aware methods
    layer_input: torch.Tensor  # (F, cls + N, vision_hidden): input of the layer that produces the features
    vision_tower: torch.nn.Module
    feature_layer: int
    cls_tokens: int  # [CLS] tokens at the front of layer_input (1 CLIP, 0 SigLIP)
    pool_stride: int | None  # the model's pooling of the N tower tokens onto the S grid
    embed_tokens: torch.nn.Module  # the LLM's input embedding table
    tokenizer: object  # the LLM's tokenizer
    cls_features: torch.Tensor | None = None  # (F, cls, vision_hidden): the feature layer's [CLS] output
    sample_id: str = ""  # "<task>/<doc_id>" under the runner: stable across devices and resumed runs
    on_grid: bool = True  # ``projected`` is a square grid per frame (laid out with the model's grid newlines)

    @property
    def frames(self) -> int:
        return self.features.shape[0]

    def to_llm_grid(self, per_token: torch.Tensor) -> torch.Tensor:
        """(F, N, ...) or (F, N) values on the tower's tokens → the S positions the LLM receives."""
        if per_token.ndim == 2:
            return pool_grid(per_token[..., None], self.pool_stride)[..., 0]
        return pool_grid(per_token, self.pool_stride)


class Pruner:
    """Keeps every visual token. Subclasses override the hooks they need (see the module docstring)."""

    in_encoder = False  # True: budget counts the tower's patch tokens per frame (before any pooling)
    reduced_grid = False  # True: `reduce` returns a square grid per frame, laid out with grid newlines

    config_name: str | None = None  # the config's ``name`` (set by `build_pruner`), for messages

    def __init__(self, budget: int | None):
        self.budget = budget

    def attach(self, model) -> None:
        """Patch ``model`` before inference (no-op here)."""

    def detach(self, model) -> None:
        """Undo `attach` (no-op here)."""

    @property
    def tokens_per_frame(self) -> int | None:
        """Visual tokens per frame that `reduce` or `select` returns (None: all)."""
        return self.budget

    def reduce(self, tokens: VisualTokens) -> torch.Tensor | None:
        """(F, k, vision_hidden) new feature-layer tokens replacing ``tokens.features``; None keeps them."""
        return None

    def select(self, tokens: VisualTokens) -> torch.Tensor | None:
        """(F, k) indices of each frame's tokens to keep (into ``projected``'s S), ascending; None keeps all."""
        return None

    def prefill(self, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, frames: int = 1):
        """Run the LLM over the prompt with a KV cache: (model output, visual tokens it kept).

        ``inputs_embeds`` (1, L, hidden); ``image_mask`` (L,) marks the prunable visual positions of
        the sample's ``frames`` frames (newlines are not marked). The count may be an int or a 0-dim
        tensor: the pipeline reads it after the answer, where it waits for the device anyway.
        """
        return language_model(inputs_embeds=inputs_embeds, use_cache=True), image_mask.sum()


# Config fields that describe the pruner rather than configure it: not passed to its class.
META_FIELDS = ("_target_", "name", "method")


def pruner_class(pruner_cfg) -> type[Pruner]:
    """The `Pruner` subclass a pruner config's ``_target_`` names; ConfigError naming the module and
    class when it does not import."""
    name, target = pruner_cfg.get("name"), pruner_cfg.get("_target_")
    missing = [field for field in META_FIELDS if not pruner_cfg.get(field)]
    if missing:
        raise ConfigError(
            f"pruner {name!r} lacks {', '.join(missing)}: a pruner config names its class (_target_, e.g. "
            "baselines.pruners.FasterVLMPruner), its run folder (name) and its method family (method)"
        )
    module_name, _, class_name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"pruner {name!r}: _target_={target!r}: module {module_name!r} does not import ({err}); "
            "is its package on PYTHONPATH?"
        ) from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"pruner {name!r}: _target_={target!r}: module {module_name!r} has no {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Pruner)):
        raise ConfigError(f"pruner {name!r}: _target_={target!r} is not a subclass of {Pruner.__module__}.Pruner")
    return cls


def _check_fields(cls: type[Pruner], pruner_cfg) -> None:
    """Every configured option is a parameter of the class (classes taking ``**options`` check their own)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, budget
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters]
    unknown = [key for key in pruner_cfg if key not in META_FIELDS and key not in accepted]
    if unknown:
        raise ConfigError(
            f"pruner {pruner_cfg['name']!r}: unknown field(s) {', '.join(unknown)}; {cls.__name__} accepts: "
            f"{', '.join(accepted) or 'no options'}"
        )


def build_pruner(pruner_cfg, budget: int | None) -> Pruner:
    """The pruner a config names: its ``_target_`` class instantiated (`hydra.utils.instantiate`) with
    ``budget`` and the config's other fields. ``name`` labels the run and ``method`` the method family
    (presets share one); neither is passed on."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cls = pruner_class(pruner_cfg)
    _check_fields(cls, pruner_cfg)
    options = {key: value for key, value in pruner_cfg.items() if key not in ("name", "method")}
    try:
        pruner = instantiate(OmegaConf.create(options), budget=budget, _convert_="all")
    except InstantiationException as err:
        raise ConfigError(f"pruner {pruner_cfg['name']!r}: {err.__cause__ or err}") from err
    pruner.config_name = pruner_cfg["name"]
    return pruner


def _who(pruner: Pruner, hook: str) -> str:
    return f"pruner {pruner.config_name or type(pruner).__name__!r}: {hook}"


def _check_shape(pruner: Pruner, hook: str, shape: tuple, expected: tuple, meaning: str) -> None:
    if shape != expected:
        raise ValueError(f"{_who(pruner, hook)} returned shape {shape}; expected ({meaning}) = {expected}")


def check_reduction(pruner: Pruner, reduced, tokens: VisualTokens) -> None:
    """The contract of `Pruner.reduce`, checked for every pruner: None, or a (frames, tokens_per_frame,
    vision_hidden) floating-point tensor of finite values. ValueError naming the pruner."""
    if reduced is None:
        return
    if not (isinstance(reduced, torch.Tensor) and reduced.is_floating_point()):
        shown = f"a {reduced.dtype} tensor" if isinstance(reduced, torch.Tensor) else type(reduced).__name__
        raise ValueError(f"{_who(pruner, 'reduce')} returned {shown}; expected a floating-point tensor")
    frames, _, channels = tokens.features.shape
    expected = (frames, pruner.tokens_per_frame, channels)
    _check_shape(pruner, "reduce", tuple(reduced.shape), expected, "frames, tokens per frame, channels")
    require(torch.isfinite(reduced).all(), f"{_who(pruner, 'reduce')} returned non-finite values")


def check_selection(pruner: Pruner, keep, tokens: VisualTokens) -> torch.Tensor | None:
    """The contract of `Pruner.select`, checked for every pruner: None, or a (frames, tokens_per_frame)
    integer tensor of strictly ascending indices into each frame's candidates. ValueError naming the pruner.

    The values are checked with `evoprune.device_checks.require` (after the answer, inside the pipeline),
    so ``keep`` is returned clamped to the candidates: a bad index fails the sample, never the device."""
    if keep is None:
        return None
    who = _who(pruner, "select")
    frames, candidates = tokens.projected.shape[:2]
    integer = isinstance(keep, torch.Tensor) and not (keep.is_floating_point() or keep.is_complex())
    if not integer or keep.dtype == torch.bool:
        shown = f"a {keep.dtype} tensor" if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise ValueError(f"{who} returned {shown}; expected an integer tensor")
    _check_shape(pruner, "select", tuple(keep.shape), (frames, pruner.tokens_per_frame), "frames, tokens per frame")
    outside = (keep < 0) | (keep >= candidates)
    require(~outside.any(), lambda: f"{who} returned index {int(keep[outside][0])}, outside [0, {candidates - 1}]")
    unordered = keep[:, 1:] <= keep[:, :-1]
    require(
        ~unordered.any(),
        lambda: (
            f"{who} returned indices not strictly ascending (duplicates or unsorted) in frame "
            f"{int(unordered.any(dim=1).nonzero()[0])}"
        ),
    )
    return keep.clamp(0, candidates - 1)


def locate_pruner_weights(pruner_cfg) -> None:
    """Raise `ModelUnavailableError` at once when the pruner needs weights that are not on disk.

    Today only CDPruner has any: the full CLIP named by ``pruner.clip`` or the full SigLIP named by
    ``pruner.siglip`` (``kind: hf``; SigLIP unless ``relevance: llm_embedding``).
    """
    from evoprune.harness.models.weights import local_snapshot, missing_pruner_weights

    for field, what in (("clip", "CLIP"), ("siglip", "SigLIP")):
        weights = pruner_cfg.get(field)
        if not weights or weights.get("kind") != "hf" or weights.get("download", False):
            continue
        if field == "siglip" and pruner_cfg.get("relevance") == "llm_embedding":
            continue
        if local_snapshot(weights["path"]) is None:
            raise missing_pruner_weights(pruner_cfg["name"], field, what, weights["path"])
