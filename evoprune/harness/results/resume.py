"""Resuming at two levels: whole runs in a sweep, and samples within a killed run.

A run is identified by its config (less the fields that cannot change a result: console output,
output location, resume policy; the judge's key is recorded as set/unset only) and by the code
version (a hash of the `evoprune` and `baselines` sources). A complete run folder holds
``run.json`` with both; a sweep skips a run whose folder is complete with the same identity.

While a run is in progress its folder holds ``partial/run.json`` (the identity) and
``partial/journal.jsonl``: one line per answered sample, appended as soon as it is answered
(flush + fsync), each line carrying a CRC-32 of its record. A restart re-uses the journal's
answers and timings; a line that does not parse or fails its CRC (a write cut short by a kill,
a damaged disk) is reported and its sample recomputed, never mixed in. Samples that ended in an
error are not re-used: a restart retries them. When the run completes, the final files replace
the folder whole (`outputs.staged_directory`), the journal with it; until then any earlier
complete results in the folder stay untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import OmegaConf

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_json, write_jsonl
from evoprune.harness.common.source import code_version, git_commit
from evoprune.harness.results.judge import judge_in_effect

RUN_RECORD = "run.json"
PARTIAL = "partial"
JOURNAL = "journal.jsonl"
# Top-level fields that change no result (and how to present a secret).
NON_RESULT_FIELDS = ("progress", "log_level", "output_dir", "resume", "experiment", "data")
# where a benchmark's files are (generated, or a local copy) is not what they are
NON_RESULT_BENCHMARK_FIELDS = ("synthetic_data", "data_root", "local_data")
FINAL_FILES = ("config.yaml", "samples.jsonl", "metrics.json", "latency.json", "summary.txt")


def redacted_config(cfg) -> dict:
    """The resolved config as plain data, with the judge's key replaced by whether one is set."""
    data = OmegaConf.to_container(cfg, resolve=True)
    judge = data.get("judge") or {}
    if judge.get("api_key"):
        judge["api_key"] = "<set>"
    return data


def identity_config(cfg) -> dict:
    """The part of the config that can change a run's results (the benchmark's data-generator hook is
    not: the generated data carries its own format version and seed), plus ``judge_in_effect``: the
    judge a judged benchmark gets from the config or, where that is null, the environment."""
    identity = without_non_result_fields(redacted_config(cfg))
    judge = judge_in_effect(OmegaConf.select(cfg, "benchmark.tasks", default=None) or [], identity.get("judge"))
    if judge is not None:
        identity["judge_in_effect"] = judge
    return identity


def without_non_result_fields(config: dict) -> dict:
    """``config`` (plain data) without `NON_RESULT_FIELDS` and the benchmark's `NON_RESULT_BENCHMARK_FIELDS`."""
    identity = {key: value for key, value in config.items() if key not in NON_RESULT_FIELDS}
    if identity.get("runtime", "eager") == "eager":  # how to compile changes nothing when nothing is compiled
        identity.pop("compile", None)
    if isinstance(identity.get("benchmark"), dict):
        benchmark = identity["benchmark"].items()
        identity["benchmark"] = {k: v for k, v in benchmark if k not in NON_RESULT_BENCHMARK_FIELDS}
    return identity


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old → new`` for every leaf that differs (nested keys dotted)."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} → {b!r}")
    return lines


def only_new_fields(old: dict, new: dict) -> bool:
    """True when ``new`` differs from ``old`` only by fields ``old`` does not have (added by newer code)."""
    for key, before in old.items():
        if key not in new:
            return False
        after = new[key]
        if isinstance(before, dict) and isinstance(after, dict):
            if not only_new_fields(before, after):
                return False
        elif before != after:
            return False
    return True


def _mismatch(folder: Path, what: str, old: dict, new: dict) -> ConfigError:
    shown = "; ".join(config_differences(old, new)[:5])
    return ConfigError(
        f"{folder} holds {what} of a different config ({shown}); it is not reused. Rerun with resume=false "
        f"to replace it (the old results stay until the new run completes), or set output_dir=… to keep both"
    )


def read_complete(folder: Path) -> tuple[dict | None, str]:
    """(``run.json`` of a complete, intact run folder, "") or (None, why it is not one)."""
    record_path = folder / RUN_RECORD
    if not record_path.exists():
        return None, "no complete run"
    try:
        record = json.loads(record_path.read_text())
        missing = [name for name in FINAL_FILES if not (folder / name).exists()]
        if missing:
            return None, f"files missing: {missing}"
        with open(folder / "samples.jsonl", encoding="utf-8") as handle:
            lines = sum(1 for _ in handle)
        if lines != record["samples"]:
            return None, f"samples.jsonl has {lines} lines, run.json says {record['samples']}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable: {type(err).__name__}: {err}"
    return record, ""


def completion_record(identity: dict, samples: int, errors: int, resumed: int) -> dict:
    """The ``run.json`` of a finished run."""
    return {
        "config_hash": config_hash(identity),
        "code_version": code_version(),
        "git_commit": git_commit(),
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "samples": samples,
        "errors": errors,
        "resumed_samples": resumed,
        "config": identity,
    }


def _crc(record: dict) -> int:
    return zlib.crc32(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode())


def sample_key(record: dict) -> tuple[str, int]:
    return record["task"], int(record["doc_id"])


@dataclass
class Journal:
    """The samples of an unfinished run: re-used answers in, newly answered samples appended."""

    folder: Path  # the run folder; the journal lives in folder/partial/
    identity: dict
    reused: dict[tuple[str, int], dict] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # why each rejected line was rejected
    _handle: object = None

    @property
    def path(self) -> Path:
        return self.folder / PARTIAL / JOURNAL

    def lookup(self, task: str, doc_id: int, prompt: str) -> dict | None:
        """The journaled record of this sample (same prompt, no error), or None."""
        record = self.reused.get((task, int(doc_id)))
        if record is None or record["prompt"] != prompt:
            return None
        return record

    def start(self) -> None:
        """Write the identity and the journal's valid lines (dropping rejected ones), then open it."""
        partial = self.folder / PARTIAL
        partial.mkdir(parents=True, exist_ok=True)
        header = {"config_hash": config_hash(self.identity), "code_version": code_version(), "config": self.identity}
        write_json(partial / RUN_RECORD, header)
        write_jsonl(self.path, [_journal_line(record) for record in self.reused.values()])
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, record: dict) -> None:
        """Append one answered sample durably (flush + fsync before returning)."""
        self._handle.write(json.dumps(_journal_line(record), ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def kept(self) -> int:
        """How many answered samples the journal holds for a resume (call after close())."""
        return len(parse_journal(self.path)[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _journal_line(record: dict) -> dict:
    return {"crc32": _crc(record), "record": record}


def parse_journal(path: Path) -> tuple[dict[tuple[str, int], dict], list[str]]:
    """Valid successful records by sample key (first wins) and a reason per rejected line."""
    records: dict[tuple[str, int], dict] = {}
    rejected = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                entry = json.loads(line)
                record = entry["record"]
                if entry["crc32"] != _crc(record):
                    raise ValueError("CRC mismatch")
                key = sample_key(record)
            except (ValueError, KeyError, TypeError) as err:
                rejected.append(f"line {number}: {type(err).__name__}: {str(err)[:80]}")
                continue
            if record.get("error") is None:
                records.setdefault(key, record)
    return records, rejected


@dataclass
class RunPlan:
    """What to do with a run folder: skip it (complete) or run it, re-using ``journal``'s samples."""

    folder: Path
    identity: dict
    complete: dict | None = None  # run.json of the complete run to skip
    journal: Journal | None = None
    notes: list[str] = field(default_factory=list)


def plan_run(cfg, folder: Path) -> RunPlan:
    """Read-only: decide from the folder's contents whether to skip, resume or start the run.

    Raises ConfigError when, with resume on, the folder holds a complete or partial run of another
    config. With resume off, nothing in the folder is re-used (it is replaced on completion).
    """
    identity = identity_config(cfg)
    plan = RunPlan(folder=folder, identity=identity, journal=Journal(folder, identity))
    if not cfg.resume:
        return plan
    complete, why_not = read_complete(folder)
    if complete is not None:
        if complete.get("config_hash") != config_hash(identity):
            old = without_non_result_fields(complete.get("config", {}))
            if complete.get("code_version") == code_version() or not only_new_fields(old, identity):
                raise _mismatch(folder, "a complete run", old, identity)
            plan.notes.append(
                f"{folder.name}: complete run from code version {complete.get('code_version')} (now {code_version()}), "
                f"whose config lacks only fields added since ({'; '.join(config_differences(old, identity)[:3])}): "
                "recomputing"
            )
            _load_partial(plan)
            return plan
        if complete.get("code_version") == code_version():
            plan.complete = complete
            return plan
        plan.notes.append(
            f"{folder.name}: complete run from code version {complete.get('code_version')} "
            f"(now {code_version()}): recomputing"
        )
    elif (folder / RUN_RECORD).exists():
        plan.notes.append(f"{folder.name}: previous results are not intact ({why_not}): recomputing")
    _load_partial(plan)
    return plan


def _load_partial(plan: RunPlan) -> None:
    partial = plan.folder / PARTIAL
    header_path = partial / RUN_RECORD
    if not header_path.exists():
        return
    try:
        header = json.loads(header_path.read_text())
    except (OSError, ValueError) as err:
        plan.notes.append(f"{plan.folder.name}: unreadable {header_path.name} ({err}): journal discarded")
        return
    if header.get("config_hash") != config_hash(plan.identity):
        same_code = header.get("code_version") == code_version()
        if same_code or not only_new_fields(without_non_result_fields(header.get("config", {})), plan.identity):
            raise _mismatch(plan.folder, "an unfinished run", header.get("config", {}), plan.identity)
    if header.get("code_version") != code_version():
        plan.notes.append(
            f"{plan.folder.name}: journal from code version {header.get('code_version')} (now {code_version()}): "
            "discarded, every sample recomputed"
        )
        return
    if not plan.journal.path.exists():
        return
    plan.journal.reused, plan.journal.rejected = parse_journal(plan.journal.path)
    if plan.journal.reused:
        plan.notes.append(
            f"{plan.folder.name}: resuming, {len(plan.journal.reused)} answered sample(s) from the journal"
        )
    if plan.journal.rejected:
        plan.notes.append(
            f"{plan.folder.name}: {len(plan.journal.rejected)} corrupt journal line(s) rejected and their samples "
            f"recomputed: {'; '.join(plan.journal.rejected[:3])}"
        )
