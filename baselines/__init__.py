"""Post-encoder visual token pruners the paper compares against (FasterVLM, VisPruner, DART,
DivPrune, CDPruner), each a pure selection function plus harness glue."""
