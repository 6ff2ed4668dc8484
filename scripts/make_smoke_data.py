"""Generate the offline smoke benchmark data (a no-op when it is already up to date).

Usage: python scripts/make_smoke_data.py [--force]
"""

from __future__ import annotations

import argparse

from evoprune.harness.data.smoke_data import ensure_smoke_data, sample_counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="regenerate even if the data is up to date")
    args = parser.parse_args(argv)
    data_dir = ensure_smoke_data(force=args.force)
    print(f"smoke data: {data_dir}")
    for task, count in sample_counts(data_dir).items():
        print(f"  {task}: {count} samples")


if __name__ == "__main__":
    main()
