"""Time to first token of the real-size models, eager and compiled: the device check's third step.

    python scripts/ttft_check.py [--shapes real|tiny] [--device cuda|cpu] [--models llava15 llava_video]
        [--runtimes eager compiled] [--repeats 5] [--out results] [--time-limit SECONDS]

Writes results/ttft_check_<device>[_tiny].{json,md} after each model and runtime (atomically) and prints the table;
a part that fails (a model's build, a runtime's runs) is reported and the rest still runs; exit status 1 if one
failed. What is timed and how: `evoprune.harness.benchmarks.ttft`; the parts: `evoprune.harness.benchmarks.parts`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.parts import TIME_LIMIT_HELP, Parts, time_limit_arg  # noqa: E402
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
    parser.add_argument("--time-limit", type=time_limit_arg, help=TIME_LIMIT_HELP)
    args = vars(parser.parse_args(argv))
    parts = Parts(args.pop("time_limit"))
    check_ttft(**args, parts=parts)
    if len(parts.named("done")) < len(parts.records):
        print(f"\n{parts.markdown()}")
    return 1 if parts.named("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
