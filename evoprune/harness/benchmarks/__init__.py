"""The benchmarks' library (scripts/bench_*.py, count_ops.py, profile_encoder.py, gpu_check.py and
ttft_check.py parse their arguments and call it): the real-size towers and models with random weights
(`shapes`, `latency_models`), the FLOP model the measured speedups are set beside (`flops`), the timing of one
call (`timing`), the encoder benchmark (`encoder`), its per-op profile (`encoder_profile`) and op and host-sync
counts (`op_counts`), the baselines' own overhead (`pruners`), time to first token per stage in interleaved
rounds with their journal (`latency_*`), the device check's time-to-first-token step (`ttft`), the device check
(`device_check`), and what a measurement ran on (`machine`). May import every part but ``reports``; ``shapes``,
``flops``, ``timing``, ``machine``, ``encoder`` and ``device_check`` import torch and transformers only (the
device check runs them where nothing else is installed; it imports ``ttft`` only when that step runs)."""
