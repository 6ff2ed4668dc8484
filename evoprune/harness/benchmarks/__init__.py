"""The benchmarks' library (scripts/bench_*.py, count_ops.py, profile_encoder.py, gpu_check.py and
ttft_check.py are its entry points): the real-size towers and models with random weights, and the FLOP
model the measured speedups are set beside. May import every other part; ``shapes`` and ``flops`` import
torch and transformers only (the device check runs them where nothing else is installed)."""
