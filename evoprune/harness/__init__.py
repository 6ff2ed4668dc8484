"""The evaluation harness around the method: what `run.py`, the sweeps, the benchmarks and lmms-eval's entry
point run. Its parts, each importing only the ones before it (tests/test_import_graph.py checks it):

- ``common``: the errors that stop a run before heavy work, atomic file writes, text tables, stage timing,
  the machine's load, op and host-sync counting, run-folder locks, command-line checks, the code's hash.
- ``data``: the generated benchmarks (smoke and shapes images, smoke video clips) with their lmms-eval
  task definitions (``data/tasks/``), and the real benchmarks from a local copy (``data.root``).
- ``models``: loading LLaVA-1.5 / LLaVA-Video (real weights, tiny seeded ones, the trained tiny
  checkpoints in ``weights/``) and the tiny tokenizers.
- ``inference``: one answer, timed stage by stage: the pipeline, the visual layout (pooling, newlines), the
  pruner contract, eager or compiled runtime, video reading, EvoPrune as a pruner.
- ``training``: the trainer of the tiny models that answer (``scripts/train_tiny.py`` is its entry point).
- ``results``: what a run keeps and reports: its identity and sample journal, the judge policy and option
  parsing, the video benchmarks' derived scores, the paper's numbers, latency reports, rendered tables.
- ``evaluation``: a run end to end (config checks, lmms-eval's model class and CLI entry, the runner) and
  sweeps over experiments.
- ``benchmarks``: the benchmark scripts' library: real-size towers and models with random weights, the FLOP
  model, timed interleaved rounds with their journal, the latency tables and figures.
- ``reports``: the tables and figures drawn from a sweep's runs (Tables 1-3, Figures 3 and 4).

The method itself (`evoprune.patch` and the pure functions beside it) imports none of this.
"""

LAYERS = ("common", "data", "models", "inference", "training", "results", "evaluation", "benchmarks", "reports")
