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
overhead is small. Needs torch and transformers only (the library: `evoprune.harness.benchmarks.encoder`).

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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.encoder import EncoderBench, benchmark_encoder, rerender  # noqa: E402
from evoprune.harness.benchmarks.shapes import TOWERS  # noqa: E402
from evoprune.harness.benchmarks.timing import STATS  # noqa: E402
from evoprune.harness.common.errors import ConfigError  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[EncoderBench | None, Path | None]:
    """The benchmark the arguments ask for (checked before any model is built), or the result JSON to render."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tower", choices=sorted(TOWERS), default="clip")
    parser.add_argument("--frames", type=int, default=None, help="batch of frames/images (clip: 1, siglip: 64)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
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
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the json/md")
    parser.add_argument(
        "--render", type=Path, default=None, help="only rewrite the .md beside this result JSON from it (no timing)"
    )
    args = vars(parser.parse_args(argv))
    render = args.pop("render")
    if args["device"] is None:
        del args["device"]
    try:
        return EncoderBench(**args), render
    except ConfigError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    bench, render = parse_args(argv)
    if render is not None:
        print(rerender(render))
    else:
        benchmark_encoder(bench)


if __name__ == "__main__":
    main()
