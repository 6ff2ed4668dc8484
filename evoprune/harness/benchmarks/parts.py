"""A long benchmark as a list of parts run one by one, so that one session on a lent machine yields what it can.

Each part is announced on stderr with the time elapsed (a command killed at its limit still shows where the time
went), timed, and recorded as done, failed or skipped. A part that raises is recorded as failed with its reason (its
traceback goes to stderr) and the next part still runs. Once the time limit has passed, every part not yet started
is recorded as skipped: a part already running is not interrupted, so set the limit a part's length below the
machine's own. The owner writes its files after each part (``on_change``). Needs the standard library only.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from evoprune.harness.common.text_tables import markdown_table

T = TypeVar("T")
STATUSES = ("done", "failed", "skipped")
TIME_LIMIT_HELP = "seconds: the parts not started by then are skipped and named (default: no limit)"


def time_limit_arg(text: str) -> float:
    """argparse type of a ``--time-limit``: seconds >= 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return seconds


@dataclass
class Parts:
    time_limit_s: float | None = None  # None: no limit
    on_change: Callable[[], None] | None = None  # called after each part is recorded
    clock: Callable[[], float] = time.perf_counter
    records: list[dict] = field(default_factory=list)  # {"part", "status", "seconds", "reason"}

    def __post_init__(self):
        if self.time_limit_s is not None and not self.time_limit_s >= 0:
            raise ValueError(f"time_limit_s={self.time_limit_s!r} must be >= 0 seconds, or None for no limit")
        self.started = self.clock()

    def run(self, name: str, part: Callable[[], T]) -> T | None:
        """``part()``'s result, or None when it was skipped (the time limit had passed) or failed (it raised)."""
        start = self.clock()
        elapsed = start - self.started
        if self.time_limit_s is not None and elapsed >= self.time_limit_s:
            self.skip(name, f"time limit of {self.time_limit_s:g} s passed ({elapsed:.0f} s)")
            return None
        print(f"[{elapsed:7.1f} s] {name}", file=sys.stderr, flush=True)
        try:
            result = part()
        except Exception as err:  # recorded with its reason and counted in `failed`: the next part still runs
            traceback.print_exc()
            self._record(name, "failed", self.clock() - start, f"{type(err).__name__}: {err}")
            return None
        self._record(name, "done", self.clock() - start, "")
        return result

    def skip(self, name: str, reason: str) -> None:
        """Record ``name`` as skipped for ``reason`` (something it needs is missing)."""
        self._record(name, "skipped", 0.0, reason)

    def _record(self, name: str, status: str, seconds: float, reason: str) -> None:
        self.records.append({"part": name, "status": status, "seconds": seconds, "reason": reason})
        if status != "done":
            print(f"[{self.clock() - self.started:7.1f} s] {name}: {status}: {reason}", file=sys.stderr, flush=True)
        if self.on_change is not None:
            self.on_change()

    def named(self, status: str) -> list[str]:
        """The parts recorded with ``status`` (one of `STATUSES`), in order."""
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is not one of: {', '.join(STATUSES)}")
        return [record["part"] for record in self.records if record["status"] == status]

    def markdown(self) -> str:
        """One row per part: its status, why (unless done) and its seconds; then `summary`."""
        rows = [["part", "status", "reason", "seconds"]]
        rows += [[r["part"], r["status"], _cell(r["reason"]), f"{r['seconds']:.1f}"] for r in self.records]
        return f"{markdown_table(rows, left=3)}\n\n{self.summary()}"

    def summary(self) -> str:
        """How many parts are done, failed and skipped, and the seconds since the start."""
        counts = ", ".join(f"{len(self.named(status))} {status}" for status in STATUSES)
        return f"{counts}; {self.clock() - self.started:.0f} s in all."


def _cell(reason: str, most: int = 300) -> str:
    """A reason as one Markdown cell: one line, its pipes escaped, cut at ``most`` characters (the JSON keeps it
    whole)."""
    line = " ".join(reason.split())
    line = line if len(line) <= most else line[: most - 1] + "…"
    return line.replace("|", "\\|") or "–"
