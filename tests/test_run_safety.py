"""Runs that never lose work or run the wrong thing: limits a task cannot score, scoring that fails after
the answers, typos in overrides, two runs on one folder, other processes competing for the cores."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, compose_config, run_py

from evoprune.harness.common import machine_load
from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.overrides import check_command_line
from evoprune.harness.common.run_lock import RunFolderBusy, lock_path, run_folder_lock
from evoprune.harness.evaluation.settings import check_config
from evoprune.harness.results.run_folder import run_dir

# --- a limit a task cannot score is refused before any work ---------------------------------------------


@pytest.mark.parametrize(
    "overrides, task",
    [
        (["limit=3"], "smoke_yesno"),
        (["benchmark=shapes_image", "model=tiny_llava_trained", "limit=1"], "shapes_yesno"),
        (["benchmark=image", "model=llava15_7b", "benchmark.tasks=[mme]", "limit=3"], "mme"),
    ],
)
def test_a_limit_splitting_question_pairs_is_refused_naming_the_task(overrides, task):
    with pytest.raises(ConfigError) as caught:
        check_config(compose_config(*overrides))
    assert f"task {task} (2 questions each" in str(caught.value) and "a multiple of 2" in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["limit=4"],
        ["benchmark=image", "model=llava15_7b", "benchmark.tasks=[vqav2_val,mmbench_en_dev]", "limit=3"],
        ["benchmark=smoke_video", "model=tiny_llava_video", "limit=3"],
    ],
)
def test_limits_that_keep_whole_groups_pass(overrides):
    check_config(compose_config(*overrides))


# --- a failed scoring step loses nothing -------------------------------------------------------------------

FAILING_TASK = """\
task: failing_yesno
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.smoke_doc_to_visual
doc_to_text: !function utils.yesno_doc_to_text
doc_to_target: answer
generation_kwargs:
  until: ["ASSISTANT:"]
  max_new_tokens: 4
  do_sample: false
process_results: !function utils.yesno_process_results
metric_list:
  - metric: mme_perception_score
    aggregation: !function utils.aggregate_or_fail
    higher_is_better: true
"""
FAILING_UTILS = """\
from pathlib import Path

from evoprune.harness.data.tasks.smoke.utils import (
    smoke_doc_to_visual,
    yesno_aggregate,
    yesno_doc_to_text,
    yesno_process_results,
)


def aggregate_or_fail(results):
    # as lmms-eval's MME does when a pair is split
    assert not (Path(__file__).parent / "fail").exists(), "MME only supports pairwise evaluation"
    return yesno_aggregate(results)
"""


def test_a_failed_aggregation_keeps_every_answer_and_a_rerun_rescores_without_generating(tmp_path):
    from evoprune.harness.data.smoke_data import ensure_smoke_data

    ensure_smoke_data()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = REPO_ROOT / "evoprune/harness/data/tasks/smoke/data/smoke_yesno.jsonl"
    (tasks / "failing_yesno.yaml").write_text(FAILING_TASK.format(data=data))
    (tasks / "utils.py").write_text(textwrap.dedent(FAILING_UTILS))
    (tasks / "fail").touch()
    args = [
        f"benchmark.include_path={tasks}",
        "benchmark.tasks=[failing_yesno]",
        "limit=2",
        "warmup=0",
        "progress=false",
        f"output_dir={tmp_path / 'runs'}",
    ]
    folder = run_dir(compose_config(*args))

    first = run_py(*args)
    assert first.returncode == 3, first.stderr[-3000:]
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in first.stderr
    assert "scoring task 'failing_yesno' failed after all 2 samples were answered" in errors[0]
    assert "AssertionError: MME only supports pairwise evaluation" in errors[0]
    assert not (folder / "run.json").exists()  # incomplete
    kept = [json.loads(line) for line in (folder / "partial" / "samples.jsonl").read_text().splitlines()]
    assert len(kept) == 2 and all(row["answer"] is not None and row["times"]["total"] > 0 for row in kept)
    failure = json.loads((folder / "partial" / "failure.json").read_text())
    assert failure["failed"] == "scoring task 'failing_yesno'" and failure["samples_answered"] == 2
    assert "aggregate_or_fail" in "".join(failure["traceback"])

    (tasks / "fail").unlink()
    second = run_py(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert [row["answer"] for row in rows] == [row["answer"] for row in kept]
    assert all(row["from_journal"] for row in rows)  # re-scored, not regenerated
    assert json.loads((folder / "metrics.json").read_text())["resumed_samples"] == 2
    assert not (folder / "partial").exists()


# --- a typo never runs something else ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, key, suggestion",
    [
        (["prunr=evoprune"], "'prunr'", "closest: pruner"),
        (["+prunr=evoprune"], "'prunr'", "closest: pruner"),
        (["pruner=evoprune", "budget=32", "pruner.schedul=first"], "'pruner.schedul'", "closest: pruner.schedule"),
        (["pruner=evoprune", "pruner.q=3"], "'pruner.q'", "valid keys under pruner: pruner._target_"),
        (["++limt=3"], "'limt'", "closest: limit"),
        (["~judge.api_kei"], "'judge.api_kei'", "closest: judge.api_key"),
        (["-m", "budget=16,32", "pruner=evoprune,tome", "pruner.nn=3"], "'pruner.nn'", "closest: pruner.n"),
    ],
)
def test_an_unknown_key_is_refused_naming_the_closest(argv, key, suggestion):
    problem = check_command_line(argv)
    assert problem is not None and f"unknown config key {key}" in problem and suggestion in problem


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "+experiment=table1_smoke", "experiment.extra_cells=[]", "limit=2"],
        ["+cell=evoprune-64", "++seed=3", "~budget"],
        ["--cfg", "job", "model=tiny_llava_video", "model.video.frames=3", "benchmark=smoke_video"],
        ["hydra.searchpath=[file://configs]", "hydra/launcher=basic", "hydra.job.chdir=false"],
        ["pruner=evoprune", "budget=32", "pruner.schedule=first", "judge.api_key=''"],
    ],
)
def test_documented_and_existing_keys_pass(argv):
    assert check_command_line(argv) is None


@pytest.mark.parametrize(
    "entry, message",
    [
        ("file:///nowhere", "hydra.searchpath entry 'file:///nowhere': /nowhere is not a folder"),
        ("pkg://mypkg.configs", "no importable package 'mypkg.configs' (make it importable: `pip install -e"),
    ],
)
def test_a_search_path_that_names_nothing_is_an_error_naming_it(entry, message):
    assert message in check_command_line([f"hydra.searchpath=[{entry}]", "pruner=keep_norm", "budget=64"])


def test_adding_a_key_the_config_has_is_refused():
    assert "drop the '+'" in check_command_line(["+budget=3"])


def test_run_py_refuses_hydras_own_advice_before_any_work(tmp_path):
    result = run_py("+prunr=evoprune", "budget=32", f"output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("error: unknown config key 'prunr'") and "closest: pruner" in result.stderr
    assert not any(tmp_path.iterdir())


# --- one run folder, one writer ---------------------------------------------------------------------------------


def test_a_second_run_on_a_held_folder_stops_naming_the_holder(tmp_path):
    args = ["limit=2", f"output_dir={tmp_path}", "progress=false"]
    folder = run_dir(compose_config(*args))
    with run_folder_lock(folder):
        result = run_py(*args)
    assert result.returncode == 2
    assert f"error: {folder} is being written by another run: pid {os.getpid()}" in result.stderr
    assert not folder.exists()  # it stopped before reading or writing the folder
    assert lock_path(folder).read_text() == ""  # released on exit


def test_a_lock_left_by_a_killed_process_is_taken_over_and_said_so(tmp_path):
    folder = tmp_path / "model" / "suite" / "none-all"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from evoprune.harness.common.run_lock import run_folder_lock\n"
            f"with run_folder_lock(Path({str(folder)!r})):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} on "):
        with run_folder_lock(folder):
            pass
    holder.kill()
    holder.wait()
    notes = []
    with run_folder_lock(folder, notes):
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"taking over the lock left by pid {holder.pid}" in notes[0]


def test_competing_processes_are_recorded_and_warned_about(monkeypatch):
    monkeypatch.setattr(machine_load, "cores", lambda: 2)
    # 10 s on 2 cores; this process used 1.7 cores; the machine was busy 2.0 cores: others held 0.3
    start = machine_load.LoadSnapshot(wall=0.0, own_cpu=0.0, machine=(100.0, 1000.0), load_average=(1.0, 1.0, 1.0))
    end = machine_load.LoadSnapshot(wall=10.0, own_cpu=17.0, machine=(120.0, 1020.0), load_average=(2.5, 1.2, 1.0))
    record = machine_load.machine_load(start, end)
    assert record["competing"] is True and record["other_cores_busy"] == pytest.approx(0.3)
    assert "other processes kept 0.30 of the 2 cores busy" in machine_load.load_warning(record)
    assert "load average 1.00 -> 2.50" in machine_load.load_warning(record)
    # the same run alone: the machine busy only with this process
    alone = machine_load.LoadSnapshot(wall=10.0, own_cpu=17.0, machine=(117.0, 1020.0), load_average=(1.8, 1.2, 1.0))
    assert machine_load.machine_load(start, alone)["competing"] is False
    assert machine_load.load_warning(machine_load.machine_load(start, alone)) is None
    # others busy on a machine with idle cores left over: no competition
    assert machine_load.competition(busy_cores=3.0, own_cores=1.0, n_cores=16) is False
