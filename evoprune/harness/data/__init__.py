"""Benchmark data: the generated smoke and shapes suites and smoke video clips (written on first use into
``tasks/``, beside their lmms-eval task YAMLs and hooks), and the real benchmarks read from a local copy
(``real_data``). Imports ``common`` only; the task hooks in ``tasks/`` (lmms-eval loads them from the YAMLs,
nothing here imports them) score with ``results``."""
