"""The ``lmms_eval.models`` entry point (pyproject.toml): model id ``evoprune`` → `lmms_cli.EvoPruneLMM`.

Kept apart from `evoprune.harness.evaluation.lmms_cli` so that lmms-eval, which loads every entry point whenever
``lmms_eval.models`` is imported, does not import the whole harness until the model is used.
"""

from __future__ import annotations

MODEL_ID = "evoprune"
MODEL_CLASS = "evoprune.harness.evaluation.lmms_cli.EvoPruneLMM"


def manifest():
    """The entry point's payload: a `ModelManifest` (imported here: lmms_eval.models imports this module)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
