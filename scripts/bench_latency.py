"""Time to first token per stage, native vs the six pruners (and the four baselines the paper left
out: ToMe, VisionZip, spatial pooling, random), measured beside the speedups a FLOP count predicts:
LLaVA-1.5-7B at 128/64/32 visual tokens (``--model llava15``), and LLaVA-Video-7B-Qwen2 at
1, 8 and 64 frames and 64/32/16 tokens per frame (``--model llava_video``: the paper's Figure 1, and the
source of Figure 3 when no real runs exist).

The models are built at their real size with random weights (`latency_models`: CLIP-L/336 + Vicuna-7B;
SigLIP-so400m/384 with 26 layers + the 2-layer projector + 2x2 pooling + Qwen2-7B with 4 KV heads), so
nothing is downloaded. Every measurement goes through the harness's own code: the pipeline's
`generate` (one new token, so decode does nothing) with its `StageTimer` (CUDA events on CUDA,
perf_counter on CPU), its `prepare_inputs`, `lay_out` and `prefill` stage functions, and the pruners that
`run.py model=<model> pruner=<method> budget=<budget>` builds, attached and detached as the runner does.
CDPruner's text model (CLIP-L's or SigLIP-so400m's text tower) has real shapes and random weights, fed by
the byte tokenizer (an upper bound on its cost).

What is measured where, what is scaled and the FLOP model: `evoprune.harness.benchmarks.latency`.

    python scripts/bench_latency.py [--model llava15|llava_video] [--device cpu|cuda] [--frames 1 8 64]
        [--budgets ...] [--repeats 5] [--warmup 1] [--encoder-frames E] [--llm-layers L] [--shapes real|tiny]
        [--runtime eager compiled]
    python scripts/bench_latency.py --model llava_video --render results/bench_latency_video_cpu.csv

Writes results/bench_latency[_video]_<device>[_tiny].{csv,md,tex} and the figure
(results/figures/fig3_ttft_<device>.png for LLaVA-1.5: one panel per budget; fig1_<device>.png for
LLaVA-Video: one panel per frame count at ``--figure-budget``), each atomically. Completed timed rounds
are kept in results/.bench_latency[_video]_<...>.partial.json: a killed run started again with the same
arguments and code resumes after its last completed round (warm-up rounds are run again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.latency import LatencyBench, measure_latency, redraw  # noqa: E402
from evoprune.harness.benchmarks.latency_models import MODELS  # noqa: E402
from evoprune.harness.benchmarks.latency_runs import EXTRA_METHODS, METHODS  # noqa: E402
from evoprune.harness.common.errors import ConfigError  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402
from evoprune.harness.inference.runtime import RUNTIMES  # noqa: E402


def parse_args(argv: list[str] | None) -> tuple[LatencyBench, Path | None]:
    """The benchmark the arguments ask for (checked before any model is built), and the CSV to redraw."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="llava15")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="default: float16 on cuda, else float32"
    )
    parser.add_argument("--frames", type=int, nargs="+", help="frame counts (video; default 1 8 64)")
    parser.add_argument("--budgets", type=int, nargs="+", help="default: the paper's (128 64 32 / 64 32 16)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*METHODS, *EXTRA_METHODS],
        choices=[*METHODS, *EXTRA_METHODS],
        help="default: the paper's six and the four it left out",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed interleaved rounds (default 5; video on cpu 2, for time)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed interleaved rounds first")
    parser.add_argument("--no-pool", action="store_true", help="each run's own vision-side medians, no pooling")
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument(
        "--encoder-frames",
        type=int,
        default=None,
        help="frames the vision side runs on (default: 1 on cpu, all on cuda)",
    )
    parser.add_argument(
        "--llm-layers",
        type=int,
        default=None,
        help="decoder layers timed, DART's K + 1 (default: 1 on cpu, all on cuda)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        nargs="+",
        default=None,
        help="evoprune.harness.inference.runtime's, side by side when several (default: eager compiled on cuda, "
        "eager on cpu); compiled times the whole model (nothing scaled), alone into files ending in _compiled",
    )
    parser.add_argument("--figure-budget", type=int, default=None, help="video figure's budget (default: the largest)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for csv/md/tex (figure in <out>/figures)")
    parser.add_argument("--render", type=Path, help="redraw the figure from a written CSV (no timing)")
    args = vars(parser.parse_args(argv))
    render = args.pop("render")
    args["pool"] = not args.pop("no_pool")
    if args["device"] is None:
        del args["device"]
    try:
        return LatencyBench(**args), render
    except ConfigError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> list[dict]:
    bench, render = parse_args(argv)
    return redraw(bench, render) if render else measure_latency(bench)


if __name__ == "__main__":
    main()
