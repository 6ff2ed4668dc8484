"""Harness glue for EvoPrune: patch the LLaVA vision tower for the run, unpatch after.

The tower then hands the projector exactly ``budget`` patch tokens per image or frame, so there is
nothing left to select after the encoder; the merging cost is inside the ``vision_encoder`` stage.
On video (SigLIP, 729 patches per frame) every frame is merged straight to ``budget`` in one batched
tower forward (frames are the batch); the merged tokens are no grid, so the pipeline skips the 2x2
pooling and lays them out with the model's ``merged_newline``.
"""

from __future__ import annotations

import dataclasses

import evoprune
from evoprune.harness.inference.pruning import Pruner
from evoprune.patching import EvoPruneOptions
from evoprune.schedules import STRATEGIES


class EvoPrunePruner(Pruner):
    """`evoprune.patch` on ``model.model.vision_tower`` at the model's feature layer."""

    in_encoder = True

    def __init__(self, budget: int | None, schedule: str = "skip", **options):
        super().__init__(budget)
        if schedule not in STRATEGIES:
            raise ValueError(f"pruner.schedule={schedule!r} is not one of: {', '.join(STRATEGIES)}")
        accepted = [field.name for field in dataclasses.fields(EvoPruneOptions)]
        unknown = [key for key in options if key not in accepted]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; accepted: schedule, {', '.join(accepted)}")
        self.schedule = schedule
        self.options = options
        EvoPruneOptions(**options)  # bad values fail here, before any model is loaded

    def attach(self, model) -> None:
        if self.budget is None:
            return
        evoprune.patch(
            model.model.vision_tower,
            self.budget,
            self.schedule,
            feature_layer=model.config.vision_feature_layer,
            **self.options,
        )

    def detach(self, model) -> None:
        evoprune.unpatch(model.model.vision_tower)
