"""Resume: run identity and the sample journal (units), and a real `run.py` killed mid-run."""

import json
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, compose_config, count_lines, kill_when, start

from evoprune.harness import resume
from evoprune.harness.outputs import write_json, write_text
from evoprune.harness.resume import Journal, completion_record, identity_config, plan_run
from evoprune.harness.runner import run_dir
from evoprune.harness.settings import ConfigError


def _record(doc_id, answer="a", error=None, task="smoke_vqa"):
    return {
        "task": task,
        "doc_id": doc_id,
        "prompt": f"q{doc_id}",
        "answer": answer,
        "times": {"total": 0.1},
        "error": error,
        "from_journal": False,
    }


def _journal_with(folder, cfg, records):
    journal = Journal(folder, identity_config(cfg))
    journal.start()
    for record in records:
        journal.append(record)
    journal.close()
    return journal.path


def test_journal_reuses_valid_answers_and_rejects_corrupt_lines(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    path = _journal_with(folder, cfg, [_record(0), _record(1, error="ValueError: x"), _record(2), _record(3)])
    lines = path.read_text().splitlines()
    tampered = json.loads(lines[2])
    tampered["record"]["answer"] = "changed after the CRC was taken"
    lines[2] = json.dumps(tampered)
    path.write_text("\n".join(lines) + "\n" + lines[3][: len(lines[3]) // 2])  # a write cut short by a kill

    plan = plan_run(cfg, folder)
    assert plan.complete is None
    assert sorted(plan.journal.reused) == [("smoke_vqa", 0), ("smoke_vqa", 3)]  # errors are retried, not re-used
    assert [reason.split(":")[0] for reason in plan.journal.rejected] == ["line 3", "line 5"]
    assert "CRC mismatch" in plan.journal.rejected[0] and "JSONDecodeError" in plan.journal.rejected[1]
    assert any("2 corrupt journal line(s) rejected" in note for note in plan.notes)
    assert plan.journal.lookup("smoke_vqa", 0, "q0")["answer"] == "a"
    assert plan.journal.lookup("smoke_vqa", 0, "another prompt") is None

    plan.journal.start()  # the rejected lines are dropped before anything is appended
    plan.journal.close()
    assert [json.loads(line)["record"]["doc_id"] for line in path.read_text().splitlines()] == [0, 3]


def test_a_journal_written_by_other_code_is_discarded_not_mixed_in(tmp_path, monkeypatch):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    _journal_with(folder, cfg, [_record(0), _record(1)])
    assert sorted(plan_run(cfg, folder).journal.reused) == [("smoke_vqa", 0), ("smoke_vqa", 1)]  # same code
    monkeypatch.setattr(resume, "code_version", lambda: "v2")  # same config, newer code
    plan = plan_run(cfg, folder)
    assert plan.journal.reused == {} and plan.complete is None
    assert any("journal from code version v1 (now v2): discarded" in note for note in plan.notes)


def test_journal_lines_that_are_json_but_no_record_are_rejected_not_fatal(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    path = _journal_with(folder, cfg, [_record(0)])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('123\nnull\n"x"\n[1]\n{"crc32": 1}\n{"crc32": 1, "record": 5}\n')
    plan = plan_run(cfg, folder)
    assert sorted(plan.journal.reused) == [("smoke_vqa", 0)]
    assert [reason.split(":")[0] for reason in plan.journal.rejected] == [f"line {n}" for n in range(2, 8)]
    assert any("6 corrupt journal line(s) rejected" in note for note in plan.notes)


def _complete_run(folder, cfg, code="v1", errors=0):
    for name in resume.FINAL_FILES:
        write_text(folder / name, "{}\n")
    record = completion_record(identity_config(cfg), samples=1, errors=errors, resumed=0)
    write_json(folder / resume.RUN_RECORD, {**record, "code_version": code})


def test_complete_run_is_skipped_only_with_same_config_and_code(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    cfg = compose_config(f"output_dir={tmp_path}", "limit=3")
    folder = run_dir(cfg)
    _complete_run(folder, cfg)
    assert plan_run(cfg, folder).complete is not None
    assert plan_run(compose_config(f"output_dir={tmp_path}", "limit=3", "progress=false"), folder).complete

    monkeypatch.setattr(resume, "code_version", lambda: "v2")
    plan = plan_run(cfg, folder)
    assert plan.complete is None and "recomputing" in plan.notes[0]


def test_rerunning_a_stored_run_with_failed_samples_still_reports_failure(tmp_path, no_heavy_work, capsys):
    from evoprune.harness import runner

    failed = compose_config(f"output_dir={tmp_path}", "limit=2")
    _complete_run(run_dir(failed), failed, code=resume.code_version(), errors=1)
    assert runner.evaluate(failed) == 1  # skipped, not recomputed (no_heavy_work), and still a failure
    assert "1 sample error(s)" in capsys.readouterr().out
    clean = compose_config(f"output_dir={tmp_path}", "limit=4")
    _complete_run(run_dir(clean), clean, code=resume.code_version())
    assert runner.evaluate(clean) == 0


def test_folder_of_a_different_config_is_refused_not_reused(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}", "pruner=evoprune", "budget=32")
    folder = run_dir(cfg)
    _complete_run(folder, cfg)
    other = compose_config(f"output_dir={tmp_path}", "pruner=evoprune", "budget=32", "pruner.ctr=0.5")
    with pytest.raises(ConfigError) as caught:
        plan_run(other, folder)
    assert "pruner.ctr: 0.25 → 0.5" in str(caught.value) and "resume=false" in str(caught.value)
    fresh = plan_run(
        compose_config(f"output_dir={tmp_path}", "pruner=evoprune", "budget=32", "pruner.ctr=0.5", "resume=false"),
        folder,
    )
    assert fresh.complete is None and not fresh.journal.reused

    # the same holds for an unfinished run's journal
    partial_cfg = compose_config(f"output_dir={tmp_path}", "pruner=evoprune", "budget=64")
    _journal_with(run_dir(partial_cfg), partial_cfg, [_record(0)])
    with pytest.raises(ConfigError, match="unfinished run"):
        plan_run(
            compose_config(f"output_dir={tmp_path}", "pruner=evoprune", "budget=64", "pruner.k=3"), run_dir(partial_cfg)
        )


def test_a_run_whose_config_only_lacks_fields_added_by_newer_code_is_recomputed(tmp_path, monkeypatch):
    cfg = compose_config(f"output_dir={tmp_path}", "limit=3")
    folder = run_dir(cfg)
    old = identity_config(cfg)
    del old["model"]["layout"]  # as written before the field existed
    for name in resume.FINAL_FILES:
        write_text(folder / name, "{}\n")
    write_json(folder / resume.RUN_RECORD, {**completion_record(old, 1, 0, 0), "code_version": "v1"})
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    with pytest.raises(ConfigError, match="model.layout"):  # same code: a real difference
        plan_run(cfg, folder)
    monkeypatch.setattr(resume, "code_version", lambda: "v2")
    plan = plan_run(cfg, folder)
    assert plan.complete is None and "lacks only fields added since" in plan.notes[0]
    changed = compose_config(f"output_dir={tmp_path}", "limit=3", "model.pad_to_square=false")
    with pytest.raises(ConfigError, match="pad_to_square"):  # a changed value is never taken for an addition
        plan_run(changed, folder)


def test_judge_key_never_reaches_the_identity():
    identity = identity_config(compose_config("judge.api_key=sk-secret"))
    assert identity["judge"]["api_key"] == "<set>" and "sk-secret" not in json.dumps(identity)


def test_run_killed_mid_way_restarts_at_the_next_sample(tmp_path):
    args = [f"output_dir={tmp_path}", "limit=4", "warmup=0", "progress=false"]
    folder = run_dir(compose_config(*args))
    journal = folder / "partial" / "journal.jsonl"
    kill_when(start(args, tmp_path / "first"), lambda: count_lines(journal) >= 5, signal.SIGKILL)
    assert not (folder / "run.json").exists()
    lines = journal.read_text().splitlines()
    if not lines[-1].endswith("}}"):  # the kill itself cut a write short: keep this test's count exact
        lines.pop()
    answered = [json.loads(line)["record"] for line in lines]
    broken = json.loads(lines[1])
    broken["record"]["answer"] = "tampered"
    lines[1] = json.dumps(broken)
    journal.write_text("\n".join(lines) + '\n{"crc32": 12, "rec')

    second = subprocess.run(
        [sys.executable, "run.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stderr and "2 corrupt journal line(s) rejected" in second.stderr
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    keys = [(row["task"], row["doc_id"]) for row in rows]
    assert len(rows) == 12 and len(set(keys)) == 12  # every sample exactly once
    reused = {(r["task"], r["doc_id"]): r for r in rows if r["from_journal"]}
    expected = {(r["task"], r["doc_id"]): r for i, r in enumerate(answered) if i != 1}
    assert reused.keys() == expected.keys()  # the tampered sample was recomputed, the rest re-used
    assert all(
        reused[k]["times"] == expected[k]["times"] and reused[k]["answer"] == expected[k]["answer"] for k in reused
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["resumed_samples"] == len(answered) - 1 and metrics["journal_lines_rejected"] == 2
    assert not (folder / "partial").exists()
    assert json.loads((folder / "run.json").read_text())["resumed_samples"] == len(answered) - 1
