"""The prepared device check: EvoPrune's fused attention on the device, encoder latency, time to first token.

    bash scripts/gpu_check.sh [--shapes real|tiny] [--device cuda|cpu] [--steps attention encoder ttft]
        [--out results] [--time-limit SECONDS]

Writes results/gpu_check_<device>.{json,md} (beside the steps' own results/bench_encoder*_<device>.* and
results/ttft_check_<device>.*) after each part and prints the tables last. A part that fails is reported and the
rest still run; once --time-limit seconds have passed, parts not yet started are skipped and named. Exit status 1
when a part failed or a float32 protected set differs. ``--shapes tiny`` runs the same steps with tiny towers
on whatever device there is (the CPU test: under a minute). The steps, and what each needs installed:
`evoprune.harness.benchmarks.device_check`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.device_check import SHAPES, STEPS, run_device_check  # noqa: E402
from evoprune.harness.benchmarks.parts import TIME_LIMIT_HELP, time_limit_arg  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--clip", type=Path, help="the video the TTFT step reads (default: written with PyAV)")
    parser.add_argument("--time-limit", type=time_limit_arg, help=TIME_LIMIT_HELP)
    return run_device_check(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
