"""Encoder latency: native CLIP-L/336 vs EvoPrune, measured beside a FLOP-count prediction.

Builds the real-size LLaVA-1.5 vision tower (CLIP ViT-L/14-336: 24 layers, width 1024, 577
tokens) with random weights — latency does not depend on the weights, so nothing is downloaded —
and times full forwards with ``output_hidden_states=True`` as LLaVA calls it. The prediction
counts the matmul FLOPs of the tokens each layer actually processes (attention on the tokens
entering the layer, MLP on those left after its merge); measured / predicted speedup near 1
means the scoring and merging overhead is small. Needs torch and transformers only.

    python scripts/bench_encoder.py [--device cpu|cuda] [--budgets 128 64 32] [--repeats 5]

Writes results/bench_encoder_<device>.json and .md (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evoprune  # noqa: E402
from evoprune.harness.outputs import write_json, write_text  # noqa: E402
from evoprune.schedules import token_counts  # noqa: E402

CLIP_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
)
RESULTS = Path(__file__).resolve().parents[1] / "results"


def layer_flops(tokens: int, merged: int, width: int, mlp_width: int) -> float:
    """Multiply-adds × 2 of one encoder layer: q/k/v/out projections and attention on ``tokens``,
    the MLP on ``tokens − merged``."""
    projections = 4 * 2 * tokens * width * width
    attention = 2 * 2 * tokens * tokens * width
    mlp = 2 * 2 * (tokens - merged) * width * mlp_width
    return projections + attention + mlp


def encoder_flops(schedule: list[int], patches: int, prefix: int, width: int, mlp_width: int) -> float:
    counts = token_counts(patches, schedule)
    return sum(layer_flops(n + prefix, r, width, mlp_width) for n, r in zip(counts, schedule, strict=False))


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (default on cpu) or float16 (default on cuda)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[128, 64, 32])
    parser.add_argument("--schedule", default="skip")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    config = CLIPVisionConfig(**CLIP_L_336)
    model = CLIPVisionModel(config).to(device, dtype).eval()
    pixels = torch.randn(1, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    patches = (config.image_size // config.patch_size) ** 2
    width, mlp_width = config.hidden_size, config.intermediate_size

    native_flops = encoder_flops([0] * config.num_hidden_layers, patches, 1, width, mlp_width)
    native_s = time_forward(model, pixels, args.repeats, args.warmup)
    rows = [{"budget": patches, "encoder_ms": native_s * 1e3, "gflops": native_flops / 1e9}]
    for budget in args.budgets:
        evoprune.patch(model, budget, args.schedule)
        try:
            schedule = evoprune.schedule_of(model)
            seconds = time_forward(model, pixels, args.repeats, args.warmup)
        finally:
            evoprune.unpatch(model)
        flops = encoder_flops(schedule, patches, 1, width, mlp_width)
        predicted, measured = native_flops / flops, native_s / seconds
        rows.append(
            {
                "budget": budget,
                "encoder_ms": seconds * 1e3,
                "gflops": flops / 1e9,
                "predicted_speedup": predicted,
                "measured_speedup": measured,
                "measured_over_predicted": measured / predicted,
            }
        )
        print(f"budget {budget}: {seconds * 1e3:.1f} ms, speedup {measured:.2f}x vs predicted {predicted:.2f}x")

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    )
    lines = [
        f"# Encoder latency, CLIP-L/336 random weights, {device_name}, {str(dtype).removeprefix('torch.')}, "
        f"schedule={args.schedule}, median of {args.repeats}",
        "",
        "| tokens | encoder ms | GFLOPs | predicted speedup | measured speedup | measured / predicted |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        extra = (
            f"{row['predicted_speedup']:.2f}x | {row['measured_speedup']:.2f}x | {row['measured_over_predicted']:.2f}"
            if "predicted_speedup" in row
            else "1.00x | 1.00x | –"
        )
        lines.append(f"| {row['budget']} | {row['encoder_ms']:.1f} | {row['gflops']:.1f} | {extra} |")
    table = "\n".join(lines)
    print(table)
    tag = device.type
    meta = {"device": device_name, "dtype": str(dtype), "schedule": args.schedule, "repeats": args.repeats}
    meta |= {"torch": torch.__version__}
    write_json(RESULTS / f"bench_encoder_{tag}.json", {"meta": meta, "rows": rows})
    write_text(RESULTS / f"bench_encoder_{tag}.md", table + "\n")


if __name__ == "__main__":
    main()
