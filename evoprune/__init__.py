"""EvoPrune: score-guided visual token merging inside the vision encoder (arXiv 2603.03681).

    import evoprune
    evoprune.patch(vision_model, budget=64)      # CLIP / SigLIP vision tower, in place
    ...
    evoprune.unpatch(vision_model)

    evoprune.hf.patch_llava(model, processor, budget=64)   # a whole HF LLaVA / LLaVA-OneVision and its processor

The method's core stays importable with torch and transformers alone; the evaluation harness
(lmms-eval, Hydra) lives in `evoprune.harness` and is never imported from here.
"""

from evoprune import hf
from evoprune.patching import EvoPruneOptions, patch, schedule_of, unpatch
from evoprune.schedules import STRATEGIES, ScheduleError, merge_schedule

__all__ = ["EvoPruneOptions", "hf", "STRATEGIES", "ScheduleError", "merge_schedule", "patch", "schedule_of", "unpatch"]
