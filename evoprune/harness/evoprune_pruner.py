"""Harness glue for EvoPrune: patch the LLaVA vision tower for the run, unpatch after.

The tower then hands the projector exactly ``budget`` patch tokens, so there is nothing left to
select after the encoder; the merging cost is inside the ``vision_encoder`` stage.
"""

from __future__ import annotations

import evoprune
from evoprune.harness.pruning import Pruner
from evoprune.patching import EvoPruneOptions
from evoprune.schedules import STRATEGIES


class EvoPrunePruner(Pruner):
    """`evoprune.patch` on ``model.model.vision_tower`` at the model's feature layer."""

    name = "evoprune"

    def __init__(self, budget: int | None, schedule: str = "skip", **options):
        super().__init__(budget)
        if schedule not in STRATEGIES:
            raise ValueError(f"pruner.schedule={schedule!r} is not one of: {', '.join(STRATEGIES)}")
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
