"""Encoder latency: native vision tower vs EvoPrune, measured beside a FLOP-count prediction.

Builds a real-size vision tower with random weights — latency does not depend on the weights, so
nothing is downloaded — and times full forwards with ``output_hidden_states=True`` as the LLaVA
models call it. Towers (``--tower``):
  clip    LLaVA-1.5's CLIP ViT-L/14-336: 24 layers, width 1024, 577 tokens (CLS + 576), features
          from layer −2; one image. Budgets 128/64/32.
  siglip  LLaVA-Video's SigLIP-so400m/384: 26 layers (LLaVA-NeXT deletes the 27th and the head),
          width 1152, MLP 4304, 16 heads, 729 tokens per frame, no CLS, features from the last
          layer (−1); ``--frames`` frames (default 64) as the batch, merged per frame in one batched
          call. Budgets 64/32/16 tokens per frame (the paper's video budgets).
The prediction counts the matmul FLOPs of the tokens each layer actually processes (attention on
the tokens entering the layer, MLP on those left after its merge; the patch embedding, identical
on both sides, is not counted); measured / predicted speedup near 1 means the scoring and merging
overhead is small. Needs torch and transformers only.

Timing (``--order``): ``sequential`` (CLIP's default) times each side in turn, ``--warmup``
forwards then ``--repeats`` timed ones; ``interleaved`` (SigLIP's default) runs ``--warmup``
untimed rounds on the first ``--warmup-frames`` frames, then ``--repeats`` timed rounds, each
round one forward per side in the order native, budget 1, budget 2, … so slow drift and other
processes on a shared machine hit every side alike. The table shows ``--stat`` (median: CLIP's
default; min: SigLIP's) over the timed forwards. Every run but CLIP's single-image one also
records each forward's time and cpu share (process CPU time / (wall time × threads)), and adds a
column measured / predicted from CPU time (wall × share, same statistic): when other processes
take the cores unevenly between sides the wall-time ratio is biased, the CPU-time one much less.
The JSON also keeps the other statistic, the load average and the peak resident memory.
``--render RESULT.json`` rewrites the .md beside a result from its JSON alone (no timing).

    python scripts/bench_encoder.py [--tower clip|siglip] [--frames N] [--device cpu|cuda]
        [--budgets 128 64 32] [--repeats 5] [--warmup 2] [--order sequential|interleaved]
        [--stat median|min] [--warmup-frames K] [--shapes real|tiny] [--out results/]
    python scripts/bench_encoder.py --render results/bench_encoder_siglip_f64_cpu.json

Writes results/bench_encoder_<device>.{json,md} for CLIP on one image, and
results/bench_encoder_<tower>_f<frames>_<device>.{json,md} otherwise (``siglip`` dropped for clip,
``f<frames>`` dropped for one frame, ``_tiny`` added for ``--shapes tiny``), atomically, and prints
the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evoprune  # noqa: E402
from evoprune.harness.benchmarks.flops import encoder_flops  # noqa: E402
from evoprune.harness.benchmarks.shapes import TOWERS, Tower  # noqa: E402
from evoprune.harness.common.outputs import write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


STATS = {"median": statistics.median, "min": min}


def time_call(call, device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of ``call()`` under inference mode (CUDA: synchronised before and after)."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(repeats))


def time_forward(model, pixels, repeats: int, warmup: int) -> float:
    """Median seconds of one tower forward with ``output_hidden_states=True``, as LLaVA calls it."""
    return time_call(lambda: model(pixels, output_hidden_states=True), pixels.device, repeats, warmup)


def _timed(call, device: torch.device):
    """Seconds of one ``call()`` under inference mode, and its result (freed after the clock stops)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        result = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tower", choices=sorted(TOWERS), default="clip")
    parser.add_argument("--frames", type=int, default=None, help="batch of frames/images (clip: 1, siglip: 64)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (default on cpu) or float16 (default on cuda)")
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help="tokens per image/frame")
    parser.add_argument("--schedule", default="skip")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per side (clip: 5, siglip: 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per side (interleaved: rounds)")
    parser.add_argument(
        "--warmup-frames", type=int, default=None, help="frames in a warm-up forward (clip: all, siglip: 2)"
    )
    parser.add_argument("--order", choices=("sequential", "interleaved"), default=None)
    parser.add_argument("--stat", choices=sorted(STATS), default=None, help="statistic of the timed forwards")
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real", help="tiny: test widths")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the json/md")
    parser.add_argument(
        "--render", type=Path, default=None, help="only rewrite the .md beside this result JSON from it (no timing)"
    )
    args = parser.parse_args(argv)
    tower = TOWERS[args.tower]
    for name, value in tower.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    config = tower.config_class(**tower.shapes[args.shapes])
    patches = (config.image_size // config.patch_size) ** 2
    if args.frames < 1:
        parser.error(f"--frames {args.frames} must be at least 1")
    if args.warmup_frames is None:
        args.warmup_frames = args.frames
    if not 1 <= args.warmup_frames:
        parser.error(f"--warmup-frames {args.warmup_frames} must be at least 1")
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats {args.repeats} must be >= 1 and --warmup {args.warmup} >= 0")
    bad = [b for b in args.budgets if not 1 <= b <= patches]
    if bad:
        parser.error(f"--budgets {bad} outside [1, {patches}] (the {tower.label} patch tokens per image)")
    if len(set(args.budgets)) != len(args.budgets):
        parser.error(f"--budgets {args.budgets} repeats a budget")
    args.config, args.patches = config, patches
    return args


def measure(model, pixels, sides, tower: Tower, args, log=print) -> dict:
    """Seconds of every timed forward per side (``None`` = native, else a budget).

    Each forward also checks that ``hidden_states[feature_layer]`` has the side's token count.
    """
    device = pixels.device
    warm = pixels[: args.warmup_frames]
    times = {side: [] for side in sides}
    load = {side: [] for side in sides}
    cpu_share = {side: [] for side in sides}  # process CPU seconds / (wall seconds × threads)

    def forward(side, batch):
        if side is None:
            evoprune.unpatch(model)
        else:
            evoprune.patch(model, side, args.schedule, feature_layer=tower.feature_layer)
        cpu = time.process_time()
        seconds, out = _timed(lambda: model(batch, output_hidden_states=True), device)
        cpu = time.process_time() - cpu
        tokens = out.hidden_states[tower.feature_layer].shape[1] - tower.prefix
        expected = args.patches if side is None else side
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
        if args.order == "sequential":
            for side in sides:
                for _ in range(args.warmup):
                    forward(side, warm)
                for _ in range(args.repeats):
                    timed(side)
        else:
            for _ in range(args.warmup):
                for side in sides:
                    forward(side, warm)
            for round_ in range(args.repeats):
                log(f"round {round_ + 1}/{args.repeats}", flush=True)
                for side in sides:
                    timed(side)
    finally:
        evoprune.unpatch(model)
    return {"times": times, "load": load, "cpu_share": cpu_share}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render is not None:
        print(rerender(args.render))
        return
    tower = TOWERS[args.tower]
    config, patches = args.config, args.patches
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    model = tower.model_class(config).to(device, dtype).eval()
    pixels = torch.randn(args.frames, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    width, mlp_width, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers

    schedules = {}
    for budget in args.budgets:
        evoprune.patch(model, budget, args.schedule, feature_layer=tower.feature_layer)
        schedules[budget] = evoprune.schedule_of(model)
        evoprune.unpatch(model)
    prediction = predict(args.budgets, patches, layers, tower.prefix, width, mlp_width, schedules)

    load_start = os.getloadavg()
    started = time.perf_counter()
    sides = [None, *args.budgets]
    measured = measure(model, pixels, sides, tower, args)
    wall_s = time.perf_counter() - started
    load_end = os.getloadavg()
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    stat = STATS[args.stat]
    other_name = "min" if args.stat == "median" else "median"
    other = STATS[other_name]
    times = measured["times"]
    native_s, native_other = stat(times[None]), other(times[None])
    legacy = (args.tower, args.frames, args.order, args.stat, args.shapes) == (
        "clip",
        1,
        "sequential",
        "median",
        "real",
    )
    rows = [{"budget": patches, "encoder_ms": native_s * 1e3, "gflops": prediction[patches][0] * args.frames}]
    if not legacy:
        rows[0] |= {"times_ms": [t * 1e3 for t in times[None]], f"{other_name}_ms": native_other * 1e3}
    for budget in args.budgets:
        seconds = stat(times[budget])
        gflops, predicted = prediction[budget]
        measured_speedup = native_s / seconds
        row = {
            "budget": budget,
            "encoder_ms": seconds * 1e3,
            "gflops": gflops * args.frames,
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

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    )
    meta = {"device": device_name, "dtype": str(dtype), "schedule": args.schedule, "repeats": args.repeats}
    meta |= {"torch": torch.__version__}
    if not legacy:
        meta |= {
            "tower": tower.label,
            "shapes": args.shapes,
            "config": tower.shapes[args.shapes],
            "frames": args.frames,
            "feature_layer": tower.feature_layer,
            "order": args.order,
            "statistic": args.stat,
            "warmup": args.warmup,
            "warmup_frames": min(args.warmup_frames, args.frames),
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
    stem = result_stem(args.tower, device.type, args.frames, args.shapes)
    write_json(args.out / f"{stem}.json", data)
    write_text(args.out / f"{stem}.md", table + "\n")


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
    import json

    data = json.loads(path.read_text())
    for row in data["rows"][1:]:
        ratio = cpu_time_ratio(data, row)
        if ratio is not None:
            row.setdefault("measured_over_predicted_cpu_time", ratio)
    table = render(data)
    write_json(path, data)
    write_text(path.with_suffix(".md"), table + "\n")
    return table


if __name__ == "__main__":
    main()
