"""Time to first token of the real-size models, eager and compiled: the device check's third step.

    python scripts/ttft_check.py [--shapes real|tiny] [--device cuda|cpu] [--models llava15 llava_video]
        [--runtimes eager compiled] [--repeats 5] [--out results]

Writes results/ttft_check_<device>[_tiny].{json,md} after each model (atomically) and prints the table. What is
timed and how: `evoprune.harness.benchmarks.ttft`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.ttft import PLAN, check_ttft  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", choices=sorted(PLAN), default=list(PLAN))
    parser.add_argument("--runtimes", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--clip", type=Path, help="video to read (default: latency_models' clip, written by PyAV)")
    check_ttft(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
