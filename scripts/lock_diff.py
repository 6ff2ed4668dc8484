"""Compare the running environment's packages with requirements.lock.

usage: python scripts/lock_diff.py [--lock requirements.lock] [--strict]

Prints each locked package that Python would import at another version or not at all, and each package
in the running environment's own site-packages that the lock does not hold (a venv made with
--system-site-packages also sees the machine's packages: those count only where they stand in for a
locked one). torch and what only a torch build brings (torchvision, triton, nvidia-*, cuda-*), pip and
the project itself are not in the lock and not compared. --strict exits 1 on any difference (make
install); without it the differences are a report (make check-latest).
"""

import argparse
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NOT_LOCKED = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*|pip|evoprune)$")


def locked_versions(lock: Path) -> dict[str, str]:
    """name -> version of every lock entry whose marker holds here."""
    pins = {}
    for line in lock.read_text().splitlines():
        if not re.match(r"^[A-Za-z0-9]", line):
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def installed_versions() -> tuple[dict[str, str], set[str]]:
    """(name -> version of the distribution Python imports, first on sys.path; the names installed in this
    environment's own site-packages)."""
    own_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    visible, own = {}, set()
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        visible.setdefault(name, dist.version)
        if Path(dist.locate_file("")).resolve() in own_dirs:
            own.add(name)
    return visible, own


def lock_differences(locked: dict[str, str], visible: dict[str, str], own: set[str]) -> list[str]:
    """One line per difference, sorted by package name: a locked package missing or at another version,
    or a package in this environment's own site-packages that the lock does not hold."""
    lines = []
    for name in sorted(set(locked) | own):
        if NOT_LOCKED.match(name):
            continue
        want, have = locked.get(name), visible.get(name)
        if want is None:
            lines.append(f"  + {name} {have} (not in the lock)")
        elif have is None:
            lines.append(f"  - {name} {want} (locked, not installed)")
        elif want != have:
            lines.append(f"  ~ {name} {want} -> {have}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=Path(__file__).resolve().parent.parent / "requirements.lock")
    parser.add_argument("--strict", action="store_true", help="exit 1 on any difference")
    args = parser.parse_args()
    differences = lock_differences(locked_versions(args.lock), *installed_versions())
    if not differences:
        print(f"installed packages match {args.lock.name}")
        return 0
    print(f"{len(differences)} package(s) differ from {args.lock.name} (~ locked -> installed):")
    print("\n".join(differences))
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
