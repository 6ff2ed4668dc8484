"""Wall-clock timing of one call on a device (CUDA synchronised before and after), for the benchmarks that time
whole forwards; the harness's per-stage times come from `evoprune.harness.common.timing` instead. Needs torch
only."""

from __future__ import annotations

import statistics
import time

import torch

STATS = {"median": statistics.median, "min": min}
"""The statistics a benchmark may report over its timed calls."""


def timed_call(call, device: torch.device):
    """Seconds of one ``call()`` under inference mode, and its result (freed after the clock stops)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        result = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def time_call(call, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``call()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        timed_call(call, device)
    return statistics.median(timed_call(call, device)[0] for _ in range(repeats))


def time_forward(model, pixels, repeats: int, warmup: int) -> float:
    """Median seconds of one tower forward with ``output_hidden_states=True``, as LLaVA calls it."""
    return time_call(lambda: model(pixels, output_hidden_states=True), pixels.device, repeats, warmup)
