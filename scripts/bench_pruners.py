"""Each baseline's own overhead at 576 → 128/64/32 tokens, as a fraction of the native encoder time.

    python scripts/bench_pruners.py [--device cpu|cuda] [--budgets 128 64 32] [--repeats 5]

Writes results/bench_pruners_<device>.json and .md (atomically) and prints the table. What is timed per method,
and the targets: `evoprune.harness.benchmarks.pruners`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.pruners import bench_pruners  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budgets", type=int, nargs="+", default=[128, 64, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    bench_pruners(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
