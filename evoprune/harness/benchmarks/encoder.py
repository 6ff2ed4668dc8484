"""Encoder latency: native vision tower vs EvoPrune, measured beside a FLOP-count prediction
(``scripts/bench_encoder.py`` is the entry point; its docstring says what is timed and how).

A real-size tower with random weights (`shapes.TOWERS`) runs full forwards with ``output_hidden_states=True``
as the LLaVA models call it; the prediction counts the matmul FLOPs of the tokens each layer processes
(`flops.encoder_flops`). Needs torch and transformers only: the device check runs it on a bare GPU machine.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import evoprune
from evoprune.harness.benchmarks.flops import encoder_flops
from evoprune.harness.benchmarks.machine import device_label
from evoprune.harness.benchmarks.shapes import TOWERS, Tower
from evoprune.harness.benchmarks.timing import STATS, timed_call
from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_json, write_text
from evoprune.harness.common.paths import RESULTS_DIR


@dataclass
class EncoderBench:
    """One encoder benchmark. ``None`` fields take the tower's defaults (`Tower.defaults`: CLIP one image,
    budgets 128/64/32, 5 repeats, sequential, median; SigLIP 64 frames, budgets 64/32/16, 2 repeats,
    interleaved, min); ``warmup_frames`` defaults to all frames. Bad values raise `ConfigError` naming them,
    before any model is built."""

    tower: str = "clip"
    frames: int | None = None
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    dtype: str | None = None  # float32 on cpu, float16 on cuda
    budgets: list[int] | None = None  # tokens per image / frame
    schedule: str = "skip"
    repeats: int | None = None  # timed forwards per side
    warmup: int = 2  # untimed forwards per side (interleaved: rounds)
    warmup_frames: int | None = None  # frames in a warm-up forward
    order: str | None = None  # sequential | interleaved
    stat: str | None = None  # one of STATS
    shapes: str = "real"  # real | tiny (test widths)
    out: Path = RESULTS_DIR
    config: object = field(init=False)  # the tower's transformers config at these shapes
    patches: int = field(init=False)  # patch tokens per image / frame

    def __post_init__(self):
        if self.tower not in TOWERS:
            raise ConfigError(f"tower={self.tower!r} is not one of: {', '.join(sorted(TOWERS))}")
        tower = TOWERS[self.tower]
        for name, value in tower.defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.config = tower.config_class(**tower.shapes[self.shapes])
        self.patches = (self.config.image_size // self.config.patch_size) ** 2
        if self.frames < 1:
            raise ConfigError(f"frames={self.frames} must be at least 1")
        if self.warmup_frames is None:
            self.warmup_frames = self.frames
        if self.warmup_frames < 1:
            raise ConfigError(f"warmup_frames={self.warmup_frames} must be at least 1")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"repeats={self.repeats} must be >= 1 and warmup={self.warmup} >= 0")
        bad = [b for b in self.budgets if not 1 <= b <= self.patches]
        if bad:
            raise ConfigError(f"budgets {bad} outside [1, {self.patches}] (the {tower.label} patch tokens per image)")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError(f"budgets {self.budgets} repeat a budget")


def predict(budgets: list[int], patches: int, layers: int, prefix: int, width: int, mlp_width: int, schedules):
    """Per-image GFLOPs of native and of each budget's schedule, and the predicted speedups.

    ``schedules[budget]`` is the per-layer merge count the patched tower reported.
    Returns ``{budget: (gflops, predicted_speedup)}`` with the native row under ``patches``.
    """
    native = encoder_flops([0] * layers, patches, prefix, width, mlp_width)
    rows = {patches: (native / 1e9, 1.0)}
    for budget in budgets:
        flops = encoder_flops(schedules[budget], patches, prefix, width, mlp_width)
        rows[budget] = (flops / 1e9, native / flops)
    return rows


def result_stem(tower: str, device: str, frames: int, shapes: str) -> str:
    """File stem under results/: CLIP on one image keeps the original ``bench_encoder_<device>``."""
    stem = "bench_encoder" + ("" if tower == "clip" else f"_{tower}") + ("" if frames == 1 else f"_f{frames}")
    return f"{stem}_{device}" + ("_tiny" if shapes == "tiny" else "")


def measure(model, pixels, sides, tower: Tower, bench: EncoderBench, log=print) -> dict:
    """Seconds of every timed forward per side (``None`` = native, else a budget).

    Each forward also checks that ``hidden_states[feature_layer]`` has the side's token count.
    """
    device = pixels.device
    warm = pixels[: bench.warmup_frames]
    times = {side: [] for side in sides}
    load = {side: [] for side in sides}
    cpu_share = {side: [] for side in sides}  # process CPU seconds / (wall seconds × threads)

    def forward(side, batch):
        if side is None:
            evoprune.unpatch(model)
        else:
            evoprune.patch(model, side, bench.schedule, feature_layer=tower.feature_layer)
        cpu = time.process_time()
        seconds, out = timed_call(lambda: model(batch, output_hidden_states=True), device)
        cpu = time.process_time() - cpu
        tokens = out.hidden_states[tower.feature_layer].shape[1] - tower.prefix
        expected = bench.patches if side is None else side
        if tokens != expected:
            raise RuntimeError(f"side {side}: {tokens} feature tokens, expected {expected}")
        return seconds, cpu / (seconds * torch.get_num_threads())

    def timed(side):
        seconds, share = forward(side, pixels)
        times[side].append(seconds)
        load[side].append(os.getloadavg()[0])
        cpu_share[side].append(share)
        name = "native" if side is None else f"budget {side}"
        log(f"  {name}: {seconds * 1e3:.1f} ms (load {load[side][-1]:.2f}, cpu share {share:.2f})", flush=True)

    try:
        if bench.order == "sequential":
            for side in sides:
                for _ in range(bench.warmup):
                    forward(side, warm)
                for _ in range(bench.repeats):
                    timed(side)
        else:
            for _ in range(bench.warmup):
                for side in sides:
                    forward(side, warm)
            for round_ in range(bench.repeats):
                log(f"round {round_ + 1}/{bench.repeats}", flush=True)
                for side in sides:
                    timed(side)
    finally:
        evoprune.unpatch(model)
    return {"times": times, "load": load, "cpu_share": cpu_share}


def benchmark_encoder(bench: EncoderBench) -> dict:
    """Time native and every budget, write results/<`result_stem`>.{json,md} atomically, print the table;
    returns the JSON's data."""
    tower = TOWERS[bench.tower]
    config, patches = bench.config, bench.patches
    device = torch.device(bench.device)
    dtype = getattr(torch, bench.dtype or ("float16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    model = tower.model_class(config).to(device, dtype).eval()
    pixels = torch.randn(bench.frames, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    width, mlp_width, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers

    schedules = {}
    for budget in bench.budgets:
        evoprune.patch(model, budget, bench.schedule, feature_layer=tower.feature_layer)
        schedules[budget] = evoprune.schedule_of(model)
        evoprune.unpatch(model)
    prediction = predict(bench.budgets, patches, layers, tower.prefix, width, mlp_width, schedules)

    load_start = os.getloadavg()
    started = time.perf_counter()
    sides = [None, *bench.budgets]
    measured = measure(model, pixels, sides, tower, bench)
    wall_s = time.perf_counter() - started
    load_end = os.getloadavg()
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    stat = STATS[bench.stat]
    other_name = "min" if bench.stat == "median" else "median"
    other = STATS[other_name]
    times = measured["times"]
    native_s, native_other = stat(times[None]), other(times[None])
    legacy = (bench.tower, bench.frames, bench.order, bench.stat, bench.shapes) == (
        "clip",
        1,
        "sequential",
        "median",
        "real",
    )
    rows = [{"budget": patches, "encoder_ms": native_s * 1e3, "gflops": prediction[patches][0] * bench.frames}]
    if not legacy:
        rows[0] |= {"times_ms": [t * 1e3 for t in times[None]], f"{other_name}_ms": native_other * 1e3}
    for budget in bench.budgets:
        seconds = stat(times[budget])
        gflops, predicted = prediction[budget]
        measured_speedup = native_s / seconds
        row = {
            "budget": budget,
            "encoder_ms": seconds * 1e3,
            "gflops": gflops * bench.frames,
            "predicted_speedup": predicted,
            "measured_speedup": measured_speedup,
            "measured_over_predicted": measured_speedup / predicted,
        }
        if not legacy:
            speedup_other = native_other / other(times[budget])
            row |= {
                "times_ms": [t * 1e3 for t in times[budget]],
                "schedule": schedules[budget],
                f"{other_name}_ms": other(times[budget]) * 1e3,
                f"measured_over_predicted_{other_name}": speedup_other / predicted,
            }
        rows.append(row)
        print(f"budget {budget}: {seconds * 1e3:.1f} ms, speedup {measured_speedup:.2f}x vs predicted {predicted:.2f}x")

    meta = {"device": device_label(device), "dtype": str(dtype), "schedule": bench.schedule, "repeats": bench.repeats}
    meta |= {"torch": torch.__version__}
    if not legacy:
        meta |= {
            "tower": tower.label,
            "shapes": bench.shapes,
            "config": tower.shapes[bench.shapes],
            "frames": bench.frames,
            "feature_layer": tower.feature_layer,
            "order": bench.order,
            "statistic": bench.stat,
            "warmup": bench.warmup,
            "warmup_frames": min(bench.warmup_frames, bench.frames),
            "wall_s": wall_s,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "loadavg_1min_after_each_forward": {
                "native" if side is None else str(side): values for side, values in measured["load"].items()
            },
            "cpu_share_after_each_forward": {
                "native" if side is None else str(side): values for side, values in measured["cpu_share"].items()
            },
            "peak_rss_gib": peak_rss_gib,
        }
    data = {"meta": meta, "rows": rows}
    for row in rows[1:]:
        ratio = cpu_time_ratio(data, row)
        if ratio is not None:
            row["measured_over_predicted_cpu_time"] = ratio
    table = render(data)
    print(table)
    stem = result_stem(bench.tower, device.type, bench.frames, bench.shapes)
    write_json(bench.out / f"{stem}.json", data)
    write_text(bench.out / f"{stem}.md", table + "\n")
    return data


def _side_key(row: dict, rows: list[dict]) -> str:
    return "native" if row is rows[0] else str(row["budget"])


def cpu_time_ratio(data: dict, row: dict) -> float | None:
    """measured / predicted from process CPU time (wall × cpu share) instead of wall time, by the
    run's statistic: on a shared machine the CPU time of a forward barely depends on how much of
    the cores it got, so this compares sides that got different shares. None without the shares."""
    meta, rows = data["meta"], data["rows"]
    shares = meta.get("cpu_share_after_each_forward")
    if shares is None or "times_ms" not in row:
        return None
    stat = STATS[meta["statistic"]]

    def cpu(r):
        return stat([t * c for t, c in zip(r["times_ms"], shares[_side_key(r, rows)], strict=True)])

    return cpu(rows[0]) / cpu(row) / row["predicted_speedup"]


def render(data: dict) -> str:
    """The Markdown table (and, for every run but CLIP's single-image one, its notes) of a result JSON."""
    meta, rows = data["meta"], data["rows"]
    dtype = meta["dtype"].removeprefix("torch.")
    if "order" not in meta:  # CLIP-L/336 on one image, sides one after another: the original table
        title = f"CLIP-L/336 random weights, {meta['device']}, {dtype}, schedule={meta['schedule']}, "
        title += f"median of {meta['repeats']}"
    else:
        video = meta["tower"].startswith("SigLIP")
        unit = "frame" if video else "image"
        noun = unit + ("s" if meta["frames"] > 1 else "")
        tiny = " (tiny test shapes)" if meta["shapes"] == "tiny" else ""
        title = f"{meta['tower']}{tiny} random weights, {meta['frames']} {noun} as one batch, {meta['device']}, "
        title += f"{dtype}, schedule={meta['schedule']}, feature_layer={meta['feature_layer']}, "
        title += f"{meta['statistic']} of {meta['repeats']} "
        if meta["order"] == "interleaved":
            order = ", ".join(["native", *(str(row["budget"]) for row in rows[1:])])
            title += (
                f"interleaved rounds ({order}, native, …; {meta['warmup']} warm-up rounds on "
                f"{meta['warmup_frames']} {unit}{'s' if meta['warmup_frames'] > 1 else ''} first)"
            )
        else:
            title += "forwards per side (each side's forwards one after another)"
    cpu_ratios = {row["budget"]: cpu_time_ratio(data, row) for row in rows[1:]}
    with_cpu = all(ratio is not None for ratio in cpu_ratios.values()) and "order" in meta
    header = "| tokens | encoder ms | GFLOPs | predicted speedup | measured speedup | measured / predicted |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if with_cpu:
        header += " measured / predicted, CPU time |"
        rule += "---:|"
    lines = [f"# Encoder latency, {title}", "", header, rule]
    for row in rows:
        extra = (
            f"{row['predicted_speedup']:.2f}x | {row['measured_speedup']:.2f}x | {row['measured_over_predicted']:.2f}"
            if "predicted_speedup" in row
            else "1.00x | 1.00x | –"
        )
        if with_cpu:
            extra += f" | {cpu_ratios[row['budget']]:.2f}" if row is not rows[0] else " | –"
        lines.append(f"| {row['budget']} | {row['encoder_ms']:.1f} | {row['gflops']:.1f} | {extra} |")
    if "order" not in meta:
        return "\n".join(lines)
    other_name = "min" if meta["statistic"] == "median" else "median"
    shares = meta["cpu_share_after_each_forward"]
    picked = []
    for row in rows:
        share = shares[_side_key(row, rows)]
        best = row["times_ms"].index(min(row["times_ms"]))
        picked.append(f"{'native' if row is rows[0] else row['budget']} {share[best]:.2f}")
    lines += [
        "",
        f"Tokens per {'frame' if meta['tower'].startswith('SigLIP') else 'image'}; encoder ms and GFLOPs for the "
        f"whole batch of {meta['frames']}. measured / predicted by the {other_name} instead: "
        + ", ".join(f"{row['budget']}: {row[f'measured_over_predicted_{other_name}']:.2f}" for row in rows[1:])
        + ". CPU time = wall time × cpu share (process CPU time / (wall time × threads)), by the same "
        f"{meta['statistic']}: the share a forward got barely changes its CPU time, so that column compares sides "
        "that got different shares of a shared machine; cpu share of each side's fastest forward: "
        + ", ".join(picked)
        + " (where these differ, the wall-time ratio is biased toward the side that got more).",
        "",
        "Every timed forward, ms (round by round, with its cpu share; below 1 when other processes took the cores):",
        "",
    ]
    for row in rows:
        share = shares[_side_key(row, rows)]
        timed = ", ".join(f"{t:.0f} ({c:.2f})" for t, c in zip(row["times_ms"], share, strict=True))
        lines.append(f"- {row['budget']}: {timed}")
    load_start, load_end = meta["loadavg_start"][0], meta["loadavg_end"][0]
    lines += [
        "",
        f"Benchmark wall time {meta['wall_s'] / 60:.1f} min; 1-min load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end; peak resident memory {meta['peak_rss_gib']:.1f} GiB; torch {meta['torch']}.",
    ]
    return "\n".join(lines)


def rerender(path: Path) -> str:
    """Rewrite the .md beside a result JSON from the JSON alone (no measuring): after a change of the
    table's format. Adds the CPU-time ratios to the JSON rows where they are missing."""
    data = json.loads(path.read_text())
    for row in data["rows"][1:]:
        ratio = cpu_time_ratio(data, row)
        if ratio is not None:
            row.setdefault("measured_over_predicted_cpu_time", ratio)
    table = render(data)
    write_json(path, data)
    write_text(path.with_suffix(".md"), table + "\n")
    return table
