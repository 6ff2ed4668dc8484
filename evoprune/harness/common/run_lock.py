"""One writer per run folder.

A run holds an exclusive ``flock`` on ``.<run>.lock`` beside its folder from before it writes anything
there until it exits (the kernel releases it when the process dies, however it dies); before its checks
it only looks whether another process holds it, so a run refused for bad input leaves no trace. The lock sits beside
the folder, not in it, because a completed run replaces its folder whole. The file records the holder
(pid, host, start time, command) for the message a second run gets: it stops at once (`RunFolderBusy`)
rather than waiting, since waiting would only recompute nothing (the first run's results are then
complete and skipped) and would hide the duplicate. A holder that exits normally empties the file; a
non-empty file whose lock is free was left by a process that was killed, and the next run takes it
over and says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _holder_text(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} ({holder.get('command', '?')})"
    )


def _read_holder(handle) -> dict | None:
    handle.seek(0)
    text = handle.read()
    if not text.strip():
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {"pid": "?", "host": "?", "started": "?", "command": f"unreadable lock file: {text[:60]!r}"}
    return holder if isinstance(holder, dict) else {"pid": "?", "command": f"unreadable lock file: {text[:60]!r}"}


def _lock_or_busy(handle, folder: Path) -> None:
    """Take the exclusive lock on ``handle``'s file, or raise `RunFolderBusy` naming its holder."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(handle) or {}
        raise RunFolderBusy(
            f"{folder} is being written by another run: {_holder_text(holder)}. Wait for it to finish (this "
            f"run's results are then complete and a rerun skips it), stop it, or set output_dir=… to run beside it"
        ) from None


def check_not_held(folder: Path) -> None:
    """`RunFolderBusy` if another process holds ``folder``'s lock now; creates nothing (for the checks that
    come before any work, which must leave no trace)."""
    try:
        handle = open(lock_path(folder), encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with handle:
        _lock_or_busy(handle, folder)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def run_folder_lock(folder: Path, notes=None):
    """Hold ``folder``'s lock for the block; `RunFolderBusy` naming the holder if another process has it.

    ``notes``: a list that gets the take-over message when a killed process's lock is taken over.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below, after the lock is released
    try:
        _lock_or_busy(handle, folder)
        left = _read_holder(handle)
        if left is not None and notes is not None:
            notes.append(f"{folder.name}: taking over the lock left by {_holder_text(left)}, no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now(UTC).isoformat(timespec="seconds"),
                    "command": " ".join(sys.argv)[:300],
                }
            )
        )
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()
