"""The benchmarks' library (scripts/bench_*.py, count_ops.py, profile_encoder.py, gpu_check.py and
ttft_check.py parse their arguments and call it): the real-size towers and models with random weights
(`shapes`, `latency_models`), the FLOP model the measured speedups are set beside (`flops`), the encoder
benchmark (`encoder`), time to first token per stage in interleaved rounds with their journal (`latency_*`),
and what a measurement ran on (`machine`). May import every part but ``reports``; ``shapes``, ``flops``,
``timing``, ``machine`` and ``encoder`` import torch and transformers only (the device check runs them where
nothing else is installed)."""
