"""EvoPrune: score-guided visual token merging inside the vision encoder (arXiv 2603.03681).

The method's core stays importable with torch and transformers alone; the evaluation harness
(lmms-eval, Hydra) lives in `evoprune.harness` and is never imported from here.
"""
