"""Where EvoPrune's encoder falls short of its FLOP prediction on a CPU: per-op time, native vs patched.

    python scripts/profile_encoder.py [--tower clip|siglip] [--frames F] [--budget 64] [--repeats 3]

Writes results/profile_encoder_<tower>[_f<frames>]_<device>.{json,md}. What is profiled and how the ops are
grouped: `evoprune.harness.benchmarks.encoder_profile`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.benchmarks.encoder_profile import EncoderProfile, profile_encoder  # noqa: E402
from evoprune.harness.benchmarks.shapes import TOWERS  # noqa: E402
from evoprune.harness.common.errors import ConfigError  # noqa: E402
from evoprune.harness.common.paths import RESULTS_DIR  # noqa: E402


def parse_args(argv: list[str] | None = None) -> EncoderProfile:
    """The profiling run the arguments ask for, checked before any model is built."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tower", choices=sorted(TOWERS), default="clip")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--schedule", default="skip")
    parser.add_argument("--repeats", type=int, default=3, help="profiled forwards per side (minimum per op)")
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    try:
        return EncoderProfile(**vars(parser.parse_args(argv)))
    except ConfigError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> dict:
    return profile_encoder(parse_args(argv))


if __name__ == "__main__":
    main()
