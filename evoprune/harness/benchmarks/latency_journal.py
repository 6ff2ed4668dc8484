"""Completed timed rounds of one latency benchmark, kept on disk so that a killed run started again with the
same arguments and code resumes after its last completed round."""

from __future__ import annotations

import json
from pathlib import Path

from evoprune.harness.common.outputs import write_json


class Journal:
    """Completed timed rounds of one benchmark configuration, rewritten whole after each round."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity
        self.rounds: list[dict] = []
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("identity") == identity:
                self.rounds = saved["rounds"]
            else:
                print(f"{path}: rounds of other arguments or code; starting afresh", flush=True)

    def add(self, record: dict) -> None:
        self.rounds.append(record)
        write_json(self.path, {"identity": self.identity, "rounds": self.rounds})

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def jsonable(record: dict) -> dict:
    """A round record with string keys, as it reads back from JSON."""
    return json.loads(json.dumps(record))
