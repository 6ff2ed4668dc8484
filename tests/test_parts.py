"""A long benchmark's parts (the device check's): one that fails, or comes after the time limit, costs only itself."""

import argparse

import pytest

from evoprune.harness.benchmarks.parts import Parts, time_limit_arg


def clock_at(*times: float):
    """A clock returning ``times`` in order, one per reading."""
    readings = iter(times)
    return lambda: next(readings)


def test_a_failing_part_is_recorded_with_its_reason_and_the_next_part_still_runs():
    changes = []
    parts = Parts(on_change=lambda: changes.append([r["status"] for r in parts.records]))

    def boom():
        raise RuntimeError("CUDA error: out of memory")

    assert parts.run("compile", boom) is None
    assert parts.run("time", lambda: 7) == 7
    assert [(r["part"], r["status"], r["reason"]) for r in parts.records] == [
        ("compile", "failed", "RuntimeError: CUDA error: out of memory"),
        ("time", "done", ""),
    ]
    assert changes == [["failed"], ["failed", "done"]]  # the owner rewrites its files after each part
    assert parts.named("failed") == ["compile"] and parts.named("done") == ["time"]


def test_an_interrupt_is_not_a_failed_part_it_stops_the_run():
    parts = Parts()

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        parts.run("compile", interrupted)
    assert parts.records == []


def test_parts_due_after_the_time_limit_are_skipped_without_starting():
    started = []
    # readings: construction 0; part a starts at 3 and ends at 9; b starts at 9.5 (under the limit of 10) and
    # ends at 30 (a part already running is not cut); c's turn comes at 30
    parts = Parts(10, clock=clock_at(0, 3, 9, 9.5, 30, 30, 30))
    for name in "abc":
        parts.run(name, lambda name=name: started.append(name))
    assert started == ["a", "b"]
    assert [(r["part"], r["status"], r["seconds"]) for r in parts.records] == [
        ("a", "done", 6),
        ("b", "done", 20.5),
        ("c", "skipped", 0.0),
    ]
    assert parts.records[2]["reason"] == "time limit of 10 s passed (30 s)"


def test_the_markdown_names_each_part_and_keeps_a_reason_in_one_cell():
    parts = Parts(clock=clock_at(*range(10)))
    parts.run("a", lambda: None)
    parts.skip("b", "ImportError: no omegaconf | run make device-wheels\nand carry it")
    parts.skip("c", "x" * 400)
    rows = parts.markdown().splitlines()
    assert rows[:2] == ["| part | status | reason | seconds |", "| --- | --- | --- | ---: |"]
    assert rows[2] == "| a | done | – | 1.0 |"
    assert rows[3] == "| b | skipped | ImportError: no omegaconf \\| run make device-wheels and carry it | 0.0 |"
    assert rows[4] == f"| c | skipped | {'x' * 299}… | 0.0 |"
    assert parts.records[2]["reason"] == "x" * 400  # the JSON keeps it whole
    assert rows[-1] == "1 done, 0 failed, 2 skipped; 5 s in all."  # the clock's 6th reading, less its 1st


def test_bad_time_limits_and_statuses_are_errors_naming_the_value():
    with pytest.raises(ValueError, match=r"time_limit_s=-1 must be >= 0"):
        Parts(-1)
    with pytest.raises(ValueError, match=r"status='ok' is not one of: done, failed, skipped"):
        Parts().named("ok")
    for text in ("-1", "abc", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{text}' is not a number of seconds >= 0"):
            time_limit_arg(text)
    assert time_limit_arg("0") == 0 and time_limit_arg("480.5") == 480.5
