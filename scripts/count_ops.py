"""Kernel launches and host syncs of a vision-tower forward, native vs EvoPrune (the CPU proxy of a GPU's cost).

    python scripts/count_ops.py [--shapes real|tiny] [--frames 8] [--schedule skip]

Counts CLIP-L/336 on one image and SigLIP-so400m on ``--frames`` frames, Native and each budget, and writes
results/op_counts_<shapes>.{json,md}. What is counted and how: `evoprune.harness.benchmarks.op_counts`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.op_counts import write_op_counts  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument("--frames", type=int, default=8, help="SigLIP frames (CLIP: one image)")
    parser.add_argument("--schedule", default="skip")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    write_op_counts(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
