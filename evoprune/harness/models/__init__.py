"""The models under test: loading (real weights from disk, tiny seeded ones, the trained tiny checkpoints
in ``evoprune/harness/weights/``), LLaVA-Video's original weights, the tiny tokenizers. Imports ``common``
and ``data`` only."""
