"""EvoPrune in a whole Hugging Face LLaVA, processor included: after

    evoprune.hf.patch_llava(model, processor, budget=64)

``model.generate(**processor(images=..., text=..., return_tensors="pt"))`` runs unchanged, the processor
emitting the pruned number of placeholders; `unpatch_llava` restores model and processor. Supported:

- ``LlavaForConditionalGeneration`` (LLaVA-1.5, CLIP): the tower merges each image's patch tokens to
  ``budget`` by the feature layer (``config.vision_feature_layer``); the [CLS] token is handled as the model's
  ``vision_feature_select_strategy`` says. Placeholders per image: ``budget``.
- ``LlavaOnevisionForConditionalGeneration`` (SigLIP, no [CLS]; strategy ``full``): merged tokens are no longer
  a grid, so what transformers does with the grid is left out:
  - a video: each frame merged to ``budget``; the 2×2 bilinear pooling skipped; one newline after all frames,
    where transformers puts it. Placeholders: frames × budget + 1.
  - an image: each crop (the whole image first, then each anyres tile) merged to ``budget``, the crops' tokens
    one after another and one newline after the image (no unpadding, no newline per row). Placeholders:
    crops × budget + 1; an image of a multi-image sample has one crop, as transformers gives it.

``budget`` equal to the tower's patch count is an exact no-op (model and processor untouched). Needs torch and
transformers only. Processing videos needs transformers' video processor (torchvision); the counts above are
what the patched ``replace_video_token`` gives it.
"""

from __future__ import annotations

import types

import torch

from evoprune.patching import patch, unpatch

SUPPORTED = ("LlavaForConditionalGeneration", "LlavaOnevisionForConditionalGeneration")
_PROCESSOR_METHODS = ("replace_image_token", "replace_video_token", "_get_num_multimodal_tokens")
_MODEL_METHODS = ("apply_pooling", "pack_image_features")


def patch_llava(model, processor=None, budget: int = 64, schedule: str = "skip", **options):
    """Make ``model`` (one of `SUPPORTED`) merge every image, crop or frame to ``budget`` tokens inside its
    vision tower, and ``processor`` (its transformers processor; None: inputs are built by hand) emit the
    matching placeholder counts. ``schedule`` and ``options`` are `evoprune.patch`'s. Patching again replaces
    the previous patch. Returns ``model``."""
    kind = type(model).__name__
    if kind not in SUPPORTED:
        raise TypeError(f"{kind} is not supported by evoprune.hf.patch_llava; supported: {', '.join(SUPPORTED)}")
    config = model.config
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer={layer!r}: only one feature layer is supported (an int)")
    onevision = kind == SUPPORTED[1]
    if onevision and config.vision_feature_select_strategy != "full":
        raise ValueError(
            f"vision_feature_select_strategy={config.vision_feature_select_strategy!r}: LLaVA-OneVision's "
            "SigLIP has no [CLS] to drop; only 'full' is supported"
        )
    unpatch_llava(model, processor)
    tower = model.model.vision_tower
    patch(tower, budget, schedule, feature_layer=layer, **options)
    native = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    if budget == native:
        return model  # the tower's patch is a no-op: nothing else changes
    prefix = 1 if type(tower).__name__.startswith("CLIP") else 0
    per_crop = budget + prefix - (1 if config.vision_feature_select_strategy == "default" else 0)
    if onevision:
        _install(model.model, "apply_pooling", lambda self, features: features)
        _install(model.model, "pack_image_features", _pack_merged_crops)
    if processor is not None:
        _patch_processor(processor, per_crop, onevision, config.vision_config.image_size)
    return model


def unpatch_llava(model, processor=None):
    """Undo `patch_llava` on ``model`` and ``processor``; what was never patched is left as it is."""
    unpatch(model.model.vision_tower)
    for name in _MODEL_METHODS:
        _uninstall(model.model, name)
    if processor is not None:
        for name in _PROCESSOR_METHODS:
            _uninstall(processor, name)
    return model


def _pack_merged_crops(self, image_features, image_sizes, image_newline=None, vision_aspect_ratio=None):
    """LLaVA-OneVision's ``pack_image_features`` for merged crops: each image's crops' tokens in order, then
    one newline."""
    packed = []
    for crops in image_features:
        tokens = crops.flatten(0, 1)
        if image_newline is not None:
            tokens = torch.cat((tokens, image_newline[None].to(tokens)), dim=0)
        packed.append(tokens)
    lengths = torch.tensor([len(tokens) for tokens in packed], dtype=torch.long, device=image_features[0].device)
    return packed, lengths


def _patch_processor(processor, per_crop: int, onevision: bool, crop_size: int) -> None:
    def crops(image_size) -> int:
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        pinpoints = processor.image_processor.image_grid_pinpoints
        return image_size_to_num_patches(list(image_size), pinpoints, crop_size)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        if not onevision:
            return self.image_token * per_crop
        alone = _alone(image_inputs.get("batch_num_images"), image_idx)
        size = image_inputs["image_sizes"][image_idx]
        count = crops(size.tolist() if hasattr(size, "tolist") else size) if alone else 1
        return self.image_token * (count * per_crop + 1)

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        video = video_inputs["pixel_values_videos"][video_idx]
        frames = len(video) if isinstance(video, (list, tuple)) else video.shape[0]
        return self.video_token * (frames * per_crop + 1)

    def num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        sizes = {"image_sizes": image_sizes} | ({"video_sizes": video_sizes} if video_sizes is not None else {})
        data = self._evoprune_get_num_multimodal_tokens(**sizes, **kwargs)
        if image_sizes is not None:  # one image per sample: transformers crops each
            data.num_image_tokens = [crops(size) * per_crop + 1 if onevision else per_crop for size in image_sizes]
        if video_sizes is not None:
            data.num_video_tokens = [frames * per_crop + 1 for frames, *_ in video_sizes]
        return data

    _install(processor, "replace_image_token", replace_image_token)
    if onevision:
        _install(processor, "replace_video_token", replace_video_token)
    _install(processor, "_get_num_multimodal_tokens", num_multimodal_tokens)


def _alone(batch_num_images, image_idx: int) -> bool:
    """Whether image ``image_idx`` is its sample's only image (transformers crops only those)."""
    if batch_num_images is None:
        return True
    seen = 0
    for count in batch_num_images:
        if image_idx < seen + count:
            return count == 1
        seen += count
    return True


def _install(owner, name: str, function) -> None:
    """``function`` as ``owner``'s method ``name`` on this instance; the method it had stays callable as
    `_kept` (name), and an instance attribute it had is kept for `_uninstall`."""
    owner.__dict__.setdefault("_evoprune_own", {})[name] = owner.__dict__.get(name)
    setattr(owner, _kept(name), getattr(owner, name))
    setattr(owner, name, types.MethodType(function, owner))


def _uninstall(owner, name: str) -> None:
    own = owner.__dict__.get("_evoprune_own", {})
    if name not in own:
        return
    previous = own.pop(name)
    if previous is None:
        delattr(owner, name)
    else:
        setattr(owner, name, previous)
    delattr(owner, _kept(name))
    if not own:
        del owner.__dict__["_evoprune_own"]


def _kept(name: str) -> str:
    return f"_evoprune_{name.lstrip('_')}"
