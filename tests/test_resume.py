"""Resume: run identity and the sample journal (units), and a real `run.py` killed mid-run."""

import builtins
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO_ROOT, compose_config, count_lines, kill_when, start

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_json, write_jsonl, write_text
from evoprune.harness.results import resume
from evoprune.harness.results.resume import (
    Journal,
    completion_record,
    config_differences,
    config_hash,
    identity_config,
    only_new_fields,
    plan_run,
)
from evoprune.harness.results.run_folder import run_dir


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
    from evoprune.harness.evaluation import runner

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


def test_a_journal_started_from_a_plan_is_resumed_by_the_next_plan(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    first = plan_run(cfg, folder)  # as the runner does: the plan's own journal is the one written
    first.journal.start()
    first.journal.append(_record(0))
    first.journal.close()
    again = plan_run(cfg, folder)
    assert again.journal.lookup("smoke_vqa", 0, "q0") == _record(0)


def test_closing_a_journal_is_harmless_before_start_and_after_close(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    journal = Journal(run_dir(cfg), identity_config(cfg))
    journal.close()  # never started: nothing to close
    journal.start()
    journal.append(_record(0))
    journal.close()
    journal.close()
    assert [json.loads(line)["record"] for line in journal.path.read_text().splitlines()] == [_record(0)]


def _with_locale_encoding(monkeypatch, locale_encoding):
    """`resume`'s files opened as on a machine whose locale encoding is ``locale_encoding``: a text-mode `open`
    given no encoding gets it (this machine's locale is UTF-8, so the difference cannot show otherwise)."""

    def open_in_locale(file, mode="r", *args, encoding=None, **kwargs):
        if encoding is None and "b" not in mode:
            encoding = locale_encoding
        return builtins.open(file, mode, *args, encoding=encoding, **kwargs)

    monkeypatch.setattr(resume, "open", open_in_locale, raising=False)


def test_non_ascii_answers_are_kept_on_a_machine_with_an_ascii_locale(tmp_path, monkeypatch):
    _with_locale_encoding(monkeypatch, "ascii")
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    answered = _record(0, answer="café, 答")
    _journal_with(folder, cfg, [answered])
    assert plan_run(cfg, folder).journal.lookup("smoke_vqa", 0, "q0") == answered

    for name in resume.FINAL_FILES:
        write_text(folder / name, "{}\n")
    write_jsonl(folder / "samples.jsonl", [answered])
    write_json(folder / resume.RUN_RECORD, completion_record(identity_config(cfg), samples=1, errors=0, resumed=0))
    assert plan_run(cfg, folder).complete is not None


def test_journal_bytes_that_are_not_utf8_reject_their_line_only(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    path = _journal_with(folder, cfg, [_record(n, answer=f"café {n}") for n in range(3)])
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[1].index(b"caf") + 3
    lines[1] = lines[1][:damaged] + b"\xff" + lines[1][damaged + 1 :]  # a damaged disk
    lines[2] = lines[2][: lines[2].index(b"caf") + 3] + "é".encode()[:1]  # a kill cut a write inside a character
    path.write_bytes(b"".join(lines))
    plan = plan_run(cfg, folder)
    assert sorted(plan.journal.reused) == [("smoke_vqa", 0)]
    assert plan.journal.rejected[0] == "line 2: ValueError: CRC mismatch"
    assert plan.journal.rejected[1].startswith("line 3: JSONDecodeError: ")


def test_an_unreadable_journal_header_discards_the_journal_with_a_note(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    _journal_with(folder, cfg, [_record(0)])
    write_text(folder / "partial" / "run.json", '{"config_hash": ')  # cut short
    plan = plan_run(cfg, folder)
    assert plan.journal.reused == {}
    assert plan.notes[0].startswith(f"{folder.name}: unreadable run.json (")
    assert plan.notes[0].endswith("): journal discarded")


@pytest.mark.parametrize(
    ("journaled_config", "code_now", "refused_with"),
    [
        ("lacking model.layout", "v1", "(model.layout: '<absent>' → "),  # same code: a real difference
        ("lacking model.layout", "v2", None),  # older code, the field added since: the journal is discarded
        ("limit=3", "v1", "(limit: 3 → 4)"),
        ("limit=3", "v2", "(limit: 3 → 4)"),  # a changed value is never taken for an addition
        ("no config", "v1", "("),  # a header without its config (an older format)
        ("no config", "v2", None),
    ],
)
def test_unfinished_run_of_another_config_is_refused_unless_older_code_only_added_fields(
    tmp_path, monkeypatch, journaled_config, code_now, refused_with
):
    cfg = compose_config(f"output_dir={tmp_path}", "limit=4")
    folder = run_dir(cfg)
    journaled = identity_config(
        compose_config(f"output_dir={tmp_path}", "limit=3" if "limit" in journaled_config else "limit=4")
    )
    if journaled_config == "lacking model.layout":
        del journaled["model"]["layout"]
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    journal = Journal(folder, journaled)
    journal.start()
    journal.append(_record(0))
    journal.close()
    if journaled_config == "no config":
        header = json.loads((folder / "partial" / "run.json").read_text())
        del header["config"]
        write_json(folder / "partial" / "run.json", {**header, "config_hash": "older format"})
    monkeypatch.setattr(resume, "code_version", lambda: code_now)

    if refused_with is None:
        plan = plan_run(cfg, folder)
        assert plan.journal.reused == {} and plan.complete is None
        assert f"{folder.name}: journal from code version v1 (now v2): discarded, every sample recomputed" in plan.notes
    else:
        with pytest.raises(ConfigError) as caught:
            plan_run(cfg, folder)
        assert str(caught.value).startswith(f"{folder} holds an unfinished run of a different config {refused_with}")


def _complete_run_of(folder, identity, code, drop_config=False):
    for name in resume.FINAL_FILES:
        write_text(folder / name, "{}\n")
    record = {**completion_record(identity, 1, 0, 0), "code_version": code}
    if drop_config:  # run.json as an older format wrote it
        del record["config"]
        record["config_hash"] = "older format"
    write_json(folder / resume.RUN_RECORD, record)


@pytest.mark.parametrize(("stored", "shown"), [("limit=3", "(limit: 3 → 4)"), ("no config", "(")])
def test_complete_run_of_another_config_is_refused_naming_the_folder(tmp_path, monkeypatch, stored, shown):
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    cfg = compose_config(f"output_dir={tmp_path}", "limit=4")
    folder = run_dir(cfg)
    old = identity_config(compose_config(f"output_dir={tmp_path}", "limit=3"))
    _complete_run_of(folder, old, "v1", drop_config=stored == "no config")
    with pytest.raises(ConfigError) as caught:
        plan_run(cfg, folder)
    assert str(caught.value).startswith(f"{folder} holds a complete run of a different config {shown}")


@pytest.mark.parametrize(
    ("stored", "note"),
    [
        ("same config", "complete run from code version v1 (now v2): recomputing"),
        (
            "config lacking model.layout",
            "complete run from code version v1 (now v2), whose config lacks only fields added since "
            "(model.layout: '<absent>' → ",
        ),
        ("no config", "complete run from code version v1 (now v2), whose config lacks only fields added since ("),
    ],
)
def test_complete_run_from_older_code_is_recomputed_with_a_note_naming_both_versions(
    tmp_path, monkeypatch, stored, note
):
    cfg = compose_config(f"output_dir={tmp_path}", "limit=3")
    folder = run_dir(cfg)
    old = identity_config(cfg)
    if stored == "config lacking model.layout":
        del old["model"]["layout"]
    _complete_run_of(folder, old, "v1", drop_config=stored == "no config")
    monkeypatch.setattr(resume, "code_version", lambda: "v2")
    plan = plan_run(cfg, folder)
    assert plan.complete is None
    assert plan.notes[0].startswith(f"{folder.name}: {note}")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("summary.txt deleted", "files missing: ['summary.txt']"),
        ("samples.jsonl grown", "samples.jsonl has 2 lines, run.json says 1"),
        ("run.json cut short", "unreadable: JSONDecodeError: "),
    ],
)
def test_a_complete_run_that_is_not_intact_is_recomputed_saying_why(tmp_path, damage, reason):
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    _complete_run(folder, cfg, code=resume.code_version())
    assert plan_run(cfg, folder).complete is not None
    if damage == "summary.txt deleted":
        (folder / "summary.txt").unlink()
    elif damage == "samples.jsonl grown":
        write_text(folder / "samples.jsonl", "{}\n{}\n")
    else:
        write_text(folder / resume.RUN_RECORD, (folder / resume.RUN_RECORD).read_text()[:40])
    plan = plan_run(cfg, folder)
    assert plan.complete is None
    assert plan.notes[0].startswith(f"{folder.name}: previous results are not intact ({reason}")


def test_completion_record_holds_what_a_rerun_and_a_reader_need(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    monkeypatch.setattr(resume, "git_commit", lambda: "0123456789ab-dirty")
    cfg = compose_config(f"output_dir={tmp_path}")
    folder = run_dir(cfg)
    record = completion_record(identity_config(cfg), samples=1, errors=0, resumed=1)
    assert [record[k] for k in ("git_commit", "samples", "errors", "resumed_samples")] == [
        "0123456789ab-dirty",
        1,
        0,
        1,
    ]
    finished = datetime.fromisoformat(record["completed_at"])
    assert finished.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - finished) < timedelta(minutes=1)
    for name in resume.FINAL_FILES:
        write_text(folder / name, "{}\n")
    write_json(folder / resume.RUN_RECORD, record)
    assert plan_run(cfg, folder).complete == record  # same config and code: skipped as complete


def test_the_same_overrides_in_another_order_are_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "code_version", lambda: "v1")
    first = compose_config(f"output_dir={tmp_path}", "+pruner.alpha=1", "+pruner.beta=2")
    _complete_run(run_dir(first), first)
    again = compose_config(f"output_dir={tmp_path}", "+pruner.beta=2", "+pruner.alpha=1")
    assert plan_run(again, run_dir(again)).complete is not None


@pytest.mark.parametrize(
    ("override", "same_run"),
    [
        ("progress=false", True),
        ("benchmark.synthetic_data=null", True),  # the data generator: its data carries its own version and seed
        ("benchmark.tasks=[smoke_vqa]", False),
        ("benchmark.include_path=elsewhere", False),
        ("limit=5", False),
    ],
)
def test_identity_ignores_only_fields_that_change_no_result(override, same_run):
    base = config_hash(identity_config(compose_config()))
    assert (config_hash(identity_config(compose_config(override))) == base) is same_run


def test_identity_holds_resolved_values_not_interpolations(monkeypatch):
    monkeypatch.delenv("EVOPRUNE_TEST_JUDGE_KEY", raising=False)
    overrides = ("pruner=random", "seed=7", "judge.api_key=${oc.env:EVOPRUNE_TEST_JUDGE_KEY,null}")
    identity = identity_config(compose_config(*overrides))
    assert identity["pruner"]["seed"] == 7  # written `${seed}`
    assert identity["judge"]["api_key"] is None  # an interpolation that resolves to no key is no key
    monkeypatch.setenv("EVOPRUNE_TEST_JUDGE_KEY", "sk-secret")
    assert identity_config(compose_config(*overrides))["judge"]["api_key"] == "<set>"


@pytest.mark.parametrize(
    ("old", "new", "lines"),
    [
        ({"limit": 3, "seed": 0}, {"limit": 4, "seed": 0}, ["limit: 3 → 4"]),
        ({"model": {"a": 1}}, {"model": {"a": 1, "layout": None}}, ["model.layout: '<absent>' → None"]),
        ({"model": {"a": 1, "gone": None}}, {"model": {"a": 1}}, ["model.gone: None → '<absent>'"]),
        # a YAML config's integer key beside the string keys of a stored (JSON) config
        ({"pruner": {"k": 2}}, {"pruner": {"k": 2, 3: 0.5}}, ["pruner.3: '<absent>' → 0.5"]),
    ],
)
def test_config_differences_lists_each_differing_leaf(old, new, lines):
    assert config_differences(old, new) == lines


@pytest.mark.parametrize(
    ("old", "new", "only_new"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"m": {"x": 1}}, {"m": {"x": 1, "y": 2}}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),  # a field removed
        ({"m": {"x": 1, "y": 2}}, {"m": {"x": 1}}, False),
        ({"a": 1}, {"a": 2}, False),
        ({"m": {"x": 1}}, {"m": "x"}, False),  # a section became a value
        ({"m": "x"}, {"m": {"x": 1}}, False),  # a value became a section
    ],
)
def test_only_fields_added_by_newer_code_count_as_new_fields(old, new, only_new):
    assert only_new_fields(old, new) is only_new


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


JUDGE_ENV = ("OPENAI_API_KEY", "OPENAI_API_URL", "MODEL_VERSION", "API_TYPE")


@pytest.mark.parametrize(
    ("env", "config_override"),
    [
        ({"OPENAI_API_KEY": "sk-secret"}, None),  # a key appears: MM-Vet is now scored
        ({"MODEL_VERSION": "another-judge"}, None),  # another judge model: other scores
        ({"OPENAI_API_URL": "http://localhost:8000/v1"}, None),
        ({}, "judge.model=another-judge"),
    ],
)
def test_a_judged_suite_is_another_run_when_the_judge_in_effect_changes(monkeypatch, tmp_path, env, config_override):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    base = ("benchmark=image", f"output_dir={tmp_path}")
    before = identity_config(compose_config(*base))
    assert before["judge_in_effect"]["api_key"] is None and before["judge"]["model"] is None
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    after = identity_config(compose_config(*base, *([config_override] if config_override else [])))
    assert config_hash(after) != config_hash(before)
    assert "sk-secret" not in json.dumps(after)  # the key itself never enters the identity


def test_the_judge_in_effect_is_the_configured_one_over_the_environments(monkeypatch, tmp_path):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_VERSION", "judge-from-env")
    monkeypatch.setenv("OPENAI_API_URL", "http://env/v1")
    identity = identity_config(compose_config("benchmark=image", f"output_dir={tmp_path}", "judge.model=configured"))
    assert identity["judge_in_effect"] == {
        "api_type": "openai",
        "api_url": "http://env/v1",  # not configured: the environment's
        "model": "configured",
        "api_key": None,
    }


def test_a_suite_without_a_judged_task_ignores_the_judge_environment(monkeypatch, tmp_path):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    before = identity_config(compose_config(f"output_dir={tmp_path}"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("MODEL_VERSION", "another-judge")
    after = identity_config(compose_config(f"output_dir={tmp_path}"))
    assert "judge_in_effect" not in after and after == before


def test_ctrl_c_right_after_a_journal_line_counts_that_sample_as_kept(tmp_path, monkeypatch):
    """The window the table-1 sweep test hit by chance: the line written, the sample not yet in lm.records."""
    from evoprune.harness.evaluation import runner

    write_line = Journal.append

    def append_then_ctrl_c(journal, record):
        write_line(journal, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "append", append_then_ctrl_c)
    cfg = compose_config(f"output_dir={tmp_path}", "limit=1", "benchmark.tasks=[smoke_vqa]", "progress=false")
    with pytest.raises(runner.RunInterrupted, match=r"interrupted after 1 of 1 samples of "):
        runner.evaluate(cfg)
    assert count_lines(run_dir(cfg) / "partial" / "journal.jsonl") == 1


def test_the_journal_keeps_its_whole_successful_samples_for_a_resume(tmp_path):
    cfg = compose_config(f"output_dir={tmp_path}")
    path = _journal_with(run_dir(cfg), cfg, [_record(0), _record(1, error="ValueError: x"), _record(2)])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"crc32": 1, "record": ')  # a line cut short by a kill
    assert Journal(run_dir(cfg), identity_config(cfg)).kept() == 2  # not the error, not the cut line


def test_compile_settings_change_the_identity_of_compiled_runs_only():
    eager = [identity_config(compose_config(f"compile.llm_mode={mode}")) for mode in ("null", "max-autotune")]
    assert eager[0] == eager[1] and "compile" not in eager[0]
    compiled = [
        identity_config(compose_config("runtime=compiled", f"compile.llm_mode={mode}"))
        for mode in ("null", "max-autotune")
    ]
    assert compiled[0] != compiled[1] and compiled[0]["compile"]["llm_mode"] is None
