"""Per-stage wall-clock timing for one sample.

On CUDA each stage is bracketed by CUDA events on the current stream and read after one
synchronisation at the end of the sample, so timing does not serialise the stages; on CPU
`time.perf_counter` is read directly. A stage entered twice accumulates.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

STAGES = ("video_decode", "preprocess", "vision_encoder", "other", "pruning", "prefill", "decode")


class StageTimer:
    """Collects stage durations in seconds; `STAGES` fixes the names and their order."""

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._cpu_seconds: dict[str, float] = {}
        self._events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {}
        self._wall_start = time.perf_counter()

    @contextmanager
    def stage(self, name: str, on_device: bool = True):
        """Time the block as stage ``name``; ``on_device=False`` for pure-CPU work."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
        if self._cuda and on_device:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.setdefault(name, []).append((start, end))
        else:
            start_s = time.perf_counter()
            yield
            self._cpu_seconds[name] = self._cpu_seconds.get(name, 0.0) + time.perf_counter() - start_s

    def result(self) -> dict[str, float]:
        """Every stage (0.0 if never entered), plus ``ttft`` and ``total`` wall time so far."""
        if self._cuda:
            torch.cuda.synchronize()
        times = {name: self._cpu_seconds.get(name, 0.0) for name in STAGES}
        for name, pairs in self._events.items():
            times[name] += sum(start.elapsed_time(end) for start, end in pairs) / 1000.0
        times["ttft"] = sum(times[name] for name in STAGES if name != "decode")
        times["total"] = time.perf_counter() - self._wall_start
        return times
