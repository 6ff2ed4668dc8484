"""Atomic writes and the latency summary."""

import json
import os

import pytest

from evoprune.harness.common import outputs
from evoprune.harness.common.outputs import staged_directory, write_json
from evoprune.harness.results.report import latency_summary, relative_latency


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"score": 1})

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"score": 2})
    assert json.loads(target.read_text()) == {"score": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_interrupted_run_leaves_previous_run_directory_whole(tmp_path):
    run = tmp_path / "none-all"
    with staged_directory(run) as staging:
        write_json(staging / "metrics.json", {"run": 1})
        write_json(staging / "latency.json", {"run": 1})
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(run) as staging:
            write_json(staging / "metrics.json", {"run": 2})
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["none-all"]
    assert json.loads((run / "metrics.json").read_text()) == {"run": 1}
    assert json.loads((run / "latency.json").read_text()) == {"run": 1}


def test_completed_run_replaces_the_directory(tmp_path):
    run = tmp_path / "none-all"
    with staged_directory(run) as staging:
        write_json(staging / "old.json", {})
    with staged_directory(run) as staging:
        write_json(staging / "metrics.json", {"run": 2})
    assert os.listdir(run) == ["metrics.json"]
    assert sorted(os.listdir(tmp_path)) == ["none-all"]


def _row(task, total, error=None, tokens=576):
    times = {
        "preprocess": 1.0,
        "vision_encoder": 2.0,
        "pruning": 0.5,
        "other": 0.5,
        "prefill": 3.0,
        "decode": total - 7.0,
    }
    times |= {"ttft": 7.0, "total": total}
    return {"task": task, "times": times if error is None else {}, "error": error, "visual_tokens_after": tokens}


def test_latency_summary_medians_skip_errors_and_group_stages():
    rows = [_row("a", 10.0), _row("a", 12.0), _row("b", 20.0), _row("b", 0.0, error="OSError: bad image")]
    summary = latency_summary(rows)
    overall = summary["overall"]
    assert overall["samples"] == 3
    assert overall["total"] == 12.0
    assert overall["pre_llm"] == 3.0  # encoder + pruning + other
    assert overall["llm"] == 3.0 + 5.0  # prefill + median decode
    assert summary["per_task"]["b"]["samples"] == 1


def test_relative_latency_divides_by_native():
    ours = latency_summary([_row("a", 10.0)])
    native = latency_summary([_row("a", 20.0)])
    ratios = relative_latency(ours, native)
    assert ratios["total"] == 0.5
    assert ratios["vision_encoder"] == 1.0


def test_written_files_get_a_normal_files_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    outputs.write_text(tmp_path / "a.txt", "x")  # not mkstemp's owner-only 0600
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
