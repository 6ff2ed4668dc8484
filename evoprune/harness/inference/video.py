"""Read a video as LLaVA-Video's model card does: ``frames`` frames uniformly over the whole video.

`sample_frame_indices` is the model card's ``np.linspace(0, total - 1, frames, dtype=int)`` (its
``load_video`` with ``force_sample=True``): indices truncated towards zero, the first and the last
frame always included. A video with fewer frames than requested repeats frames (the indices are
non-decreasing, some equal); the model still sees exactly ``frames`` frames, as the original does.
Timestamps are index / average fps and the duration is frame count / average fps, both as decord
reports them (the model card's ``frame_time`` and ``video_time``).

Decoding uses decord on the CPU, as the model card, and only the sampled frames; the model config's
``video.decode_workers`` readers decode runs of them side by side (measured on a 2-core machine, 64 of 1800
frames of a 640x360 H.264 clip: 1.34 s with one reader, 0.68 s with two; decord's own ``num_threads=2``
gave 1.15-1.25 s). An unreadable, empty or missing file raises `VideoReadError` naming the path and the reason.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoReadError(ValueError):
    """A video file cannot be read (missing, empty, corrupt, or no frames)."""


@dataclass
class VideoClip:
    """Sampled frames (F, H, W, 3) uint8 RGB, their timestamps (s) and the video's duration (s)."""

    frames: np.ndarray
    timestamps: list[float]
    duration: float


def sample_frame_indices(total: int, frames: int) -> np.ndarray:
    """``frames`` indices spread uniformly over ``total`` frames (repeats when total < frames)."""
    if total < 1:
        raise ValueError(f"a video needs at least one frame, got total={total}")
    if frames < 1:
        raise ValueError(f"frames={frames} must be >= 1")
    return np.linspace(0, total - 1, frames, dtype=int)


def read_video(path: str | Path, frames: int, workers: int = 1) -> VideoClip:
    """Decode ``frames`` uniformly sampled frames of the video at ``path``, split into ``workers`` runs of
    consecutive sampled frames (at most one per core this process may use) decoded side by side, one
    decord reader each: the same frames as one reader."""
    from decord import DECORDError, VideoReader, cpu

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"video file is empty (0 bytes): {path}")

    def decode(indices: np.ndarray, reader=None) -> np.ndarray:
        reader = reader or VideoReader(str(path), ctx=cpu(0), num_threads=1)
        return reader.get_batch(indices.tolist()).asnumpy()

    try:
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
        total = len(reader)
        if total < 1:
            raise VideoReadError(f"video has no frames: {path}")
        fps = float(reader.get_avg_fps())
        readers = min(workers, frames, len(os.sched_getaffinity(0)))
        runs = np.array_split(sample_frame_indices(total, frames), readers)
        if len(runs) == 1:
            pixels = decode(runs[0], reader)
        else:
            with ThreadPoolExecutor(len(runs)) as pool:  # decord decodes without holding the GIL
                pixels = np.concatenate(list(pool.map(decode, runs)))
    except (DECORDError, RuntimeError) as err:  # decord raises RuntimeError for files it cannot open
        reason = str(err).strip().splitlines()[-1]
        raise VideoReadError(f"cannot decode video {path}: {reason}") from err
    if not fps > 0:
        raise VideoReadError(f"video reports average fps {fps}, cannot place its frames in time: {path}")
    timestamps, duration = frame_times(total, fps, frames)
    return VideoClip(frames=pixels, timestamps=timestamps, duration=duration)


def frame_times(total: int, fps: float, frames: int) -> tuple[list[float], float]:
    """The times (s) of the ``frames`` frames `sample_frame_indices` picks of ``total`` frames at ``fps``, and
    the video's duration (s)."""
    return [int(i) / fps for i in sample_frame_indices(total, frames)], total / fps


def time_instruction(template: str, timestamps: list[float], duration: float) -> str:
    """The model card's time instruction: ``template`` with ``duration``, ``frames`` and ``timestamps``.

    ``timestamps`` is ``",".join(f"{t:.2f}s")`` over the sampled frames, as the model card joins them.
    """
    joined = ",".join(f"{t:.2f}s" for t in timestamps)
    return template.format(duration=duration, frames=len(timestamps), timestamps=joined)
