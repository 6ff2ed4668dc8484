"""make mutate: mutation testing of the pure modules (mutmut; not part of CI).

usage: python scripts/mutate.py [--report results/mutation.md] [--minutes N] [--skip-run]

Runs ``mutmut run`` with the configuration in pyproject.toml's [tool.mutmut] (which modules, which tests),
then writes the share of mutants killed per module, and the surviving mutants by name, to the report
(``mutmut show <name>`` prints one's diff). mutmut keeps its work in ``mutants/`` and resumes from it;
delete that folder to start over. --minutes stops the run (Ctrl-C) after that long and reports what was
checked; the next run goes on from there. --skip-run reports on the last run without running anything.
A surviving mutant is a place to look, not a verdict: some are equivalent programs no test can tell apart.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KILLED = ("killed", "caught by type check")  # a timeout counts under "other": a slow equivalent mutant times out too
NOT_RUN = ("not checked", "check was interrupted by user")


def mutant_statuses(mutmut: str) -> dict[str, str]:
    """mutant name -> status, from ``mutmut results --all true``."""
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    statuses = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def module_of(mutant: str) -> str:
    """``evoprune.merge.x_pair_scores__mutmut_3`` -> ``evoprune/merge.py`` (class methods: ``Class.x_m``)."""
    parts = mutant.split("__mutmut_")[0].split(".")
    while parts and not (REPO_ROOT / Path(*parts).with_suffix(".py")).is_file():
        parts.pop()
    return str(Path(*parts).with_suffix(".py")) if parts else mutant


def report(statuses: dict[str, str]) -> str:
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in statuses.items():
        module = module_of(name)
        by_module[module][status] += 1
        if status not in KILLED and status not in NOT_RUN:
            survivors[module].append(f"{name} ({status})")
    lines = [
        f"# Mutation score ({datetime.now(UTC):%Y-%m-%d}, mutmut, `make mutate`)",
        "",
        "Killed = the tests in pyproject.toml's [tool.mutmut] failed on the mutant; other = timeouts and the like.",
        "",
        "Killed share = killed / (mutants checked); `no tests`: no selected test reaches the mutated function.",
        "",
        "| module | mutants | not checked | killed | survived | no tests | other | killed share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    totals = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        totals.update(counts)
        lines.append(_row(module, counts))
    lines.append(_row("**all**", totals))
    lines += ["", "## Surviving mutants (`mutmut show <name>` prints the change)", ""]
    for module in sorted(survivors):
        lines.append(f"- `{module}`: " + ", ".join(f"`{s}`" for s in sorted(survivors[module])))
    return "\n".join(lines) + "\n"


def _row(module: str, counts: Counter) -> str:
    total = sum(counts.values())
    unchecked = sum(counts[s] for s in NOT_RUN)
    checked = total - unchecked
    killed = sum(counts[s] for s in KILLED)
    other = checked - killed - counts["survived"] - counts["no tests"]
    share = f"{100 * killed / checked:.1f}%" if checked else "—"
    cells = [module, total, unchecked, killed, counts["survived"], counts["no tests"], other, share]
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "results" / "mutation.md")
    parser.add_argument("--minutes", type=float, default=None, help="stop the run after this long (it resumes)")
    parser.add_argument("--skip-run", action="store_true", help="report on the last run only")
    args = parser.parse_args()
    mutmut = str(Path(sys.executable).parent / "mutmut")
    if not args.skip_run:
        # One thread per mutant process: mutmut already runs one per core, and torch's default pool per
        # process oversubscribes the cores (2.4x slower measured on the 2-core machine).
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        run = subprocess.Popen([mutmut, "run"], cwd=REPO_ROOT, env=env)
        try:
            status = run.wait(timeout=None if args.minutes is None else args.minutes * 60)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGINT)
            run.wait()
            print(f"\nstopped after {args.minutes:g} min; make mutate goes on from here", file=sys.stderr)
        else:
            if status not in (0, 1):
                print(f"error: mutmut run exited with status {status}", file=sys.stderr)
                return status
    statuses = mutant_statuses(mutmut)
    if not statuses:
        print("error: mutmut recorded no mutants (run without --skip-run first)", file=sys.stderr)
        return 1
    text = report(statuses)
    sys.path.insert(0, str(REPO_ROOT))
    from evoprune.harness.common.outputs import write_text

    write_text(args.report, text)
    print(text.split("\n## ")[0])
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
