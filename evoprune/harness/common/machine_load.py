"""Whether other processes competed for the CPUs while a run was timed.

Latency on a shared machine is only comparable between runs that had the cores to themselves. Over the
timed part of a run this records the load averages at its start and end, and, from ``/proc/stat``
(Linux), the CPU time every process spent (steal time included: another VM's) against this process's
own (``getrusage``, all threads and waited-for children). The others *competed* when the machine was
saturated (its cores at least `SATURATED` busy) and the other processes held at least
`OTHERS_SHARE` of its cores: then they took time this run would have used. Where ``/proc/stat`` does
not exist the load averages are recorded and competition is unknown. A resumed run's samples timed by
an earlier process are not covered.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

SATURATED = 0.9  # fraction of the cores busy (all processes) that counts as a saturated machine
OTHERS_SHARE = 0.1  # fraction of the cores other processes must hold, on average, to count as competing
PROC_STAT = Path("/proc/stat")


def _busy_and_total_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of every core since boot, from /proc/stat's first line; None without it."""
    try:
        fields = [int(value) for value in PROC_STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]  # guest time is inside user
    busy = user + nice + system + irq + softirq + steal
    return busy / ticks, (busy + idle + iowait) / ticks


def _own_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class LoadSnapshot:
    wall: float
    own_cpu: float
    machine: tuple[float, float] | None  # (busy, total) CPU seconds since boot
    load_average: tuple[float, float, float]


def snapshot() -> LoadSnapshot:
    return LoadSnapshot(time.monotonic(), _own_cpu_seconds(), _busy_and_total_seconds(), os.getloadavg())


def competition(busy_cores: float, own_cores: float, n_cores: int) -> bool:
    """Whether others competed: the machine saturated and they held at least `OTHERS_SHARE` of it."""
    others = max(busy_cores - own_cores, 0.0)
    return busy_cores >= SATURATED * n_cores and others >= OTHERS_SHARE * n_cores


def machine_load(start: LoadSnapshot, end: LoadSnapshot) -> dict:
    """What the machine did between two snapshots: load averages, cores busy (all / this process / others),
    and whether other processes competed (None when unknown)."""
    n_cores = cores()
    wall = max(end.wall - start.wall, 1e-9)
    own = (end.own_cpu - start.own_cpu) / wall
    record = {
        "cores": n_cores,
        "seconds": round(wall, 3),
        "load_average_start": [round(x, 2) for x in start.load_average],
        "load_average_end": [round(x, 2) for x in end.load_average],
        "own_cores_busy": round(own, 3),
        "other_cores_busy": None,
        "competing": None,
    }
    if start.machine is None or end.machine is None:
        record["note"] = f"no {PROC_STAT}: competition unknown"
        return record
    busy_seconds, total_seconds = (b - a for a, b in zip(start.machine, end.machine, strict=True))
    busy = n_cores * busy_seconds / total_seconds if total_seconds > 0 else 0.0
    record["other_cores_busy"] = round(max(busy - own, 0.0), 3)
    record["competing"] = competition(busy, own, n_cores)
    return record


def load_warning(record: dict) -> str | None:
    """The summary's warning line when other processes competed, else None."""
    if not record.get("competing"):
        return None
    start, end = record["load_average_start"][0], record["load_average_end"][0]
    return (
        f"warning: other processes kept {record['other_cores_busy']:.2f} of the {record['cores']} cores busy during "
        f"this run (load average {start:.2f} -> {end:.2f}): its latency is not comparable with other runs'"
    )
