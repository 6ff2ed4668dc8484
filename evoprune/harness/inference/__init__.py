"""One answer, timed stage by stage: the pipeline, the LLM's visual layout, the pruner contract, the eager or
compiled runtime, video reading, EvoPrune as a pruner. Imports ``common``, ``data`` and ``models`` only."""
