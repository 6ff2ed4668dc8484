"""Offline tests of the judge policy (evoprune.harness.results.judge).

The real MMBench / MM-Vet datasets live on the Hub, so the end-to-end test runs lmms-eval's
own yaml tasks on tiny synthetic JSON splits with a canned-answer model; every path that
could reach a judge API is patched to fail the test.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest
from conftest import scripted_lmms

from evoprune.harness.results.judge import (
    DEFAULT_JUDGE_MODEL,
    NO_JUDGE_MMBENCH,
    NO_JUDGE_MMVET,
    JudgeConfig,
    mmbench_circular_accuracy,
    mmbench_needs_judge,
    mmbench_regex_process_results,
    plan_tasks,
    summarize_results,
)

SUITE = ["vqav2_val", "mme", "mmbench_en_dev", "mmbench_cn_dev", "mmvet"]
NO_JUDGE = JudgeConfig()
JUDGE = JudgeConfig(api_key="sk-test", model="gpt-4-0613")

# MMBench-like rows: question index -> circular copies (index + k * 1e6) with the model's reply.
# 0: both copies read and right; 1: one copy unreadable; 2: unreadable; 3: right, E absent.
MMBENCH_ROWS = [
    (0, "A", "A"),
    (1_000_000, "B", "B. a cat"),
    (1, "C", "The answer is C."),
    (1_000_001, "A", "I cannot tell from the image"),
    (2, "B", "purple"),
    (3, "D", "D"),
]
OPTIONS = {"A": "a cat", "B": "a dog", "C": "a bird", "D": "a fish"}


def mmbench_doc(index: int, answer: str) -> dict:
    return {
        "index": index,
        "question": "What animal is shown?",
        "hint": "nan",
        **OPTIONS,
        "E": "nan",
        "answer": answer,
        "category": "object_localization",
        "L2-category": "finegrained_perception",
        "source": "synthetic",
        "split": "dev",
        "image": None,
    }


def mmbench_records() -> list[dict]:
    return [
        mmbench_regex_process_results(mmbench_doc(index, answer), [reply])["regex_acc"]
        for index, answer, reply in MMBENCH_ROWS
    ]


# --- JudgeConfig -----------------------------------------------------------------------------


def test_resolve_falls_back_to_lmms_eval_env_vars():
    env = {"OPENAI_API_KEY": "sk-env", "OPENAI_API_URL": "https://proxy/v1", "MODEL_VERSION": "gpt-4-0613"}
    judge = JudgeConfig.resolve({"api_key": None}, environ=env)
    assert judge == JudgeConfig(api_type="openai", api_url="https://proxy/v1", api_key="sk-env", model="gpt-4-0613")
    assert judge.configured


def test_resolve_reads_a_hydra_section():
    from omegaconf import OmegaConf

    section = OmegaConf.create({"api_type": None, "api_url": None, "api_key": None, "model": None})
    judge = JudgeConfig.resolve(section, environ={"OPENAI_API_KEY": "sk-env"})
    assert (judge.api_key, judge.model) == ("sk-env", DEFAULT_JUDGE_MODEL)


def test_resolve_prefers_config_over_env():
    env = {"OPENAI_API_KEY": "sk-env", "MODEL_VERSION": "gpt-4-0613"}
    judge = JudgeConfig.resolve({"api_key": "sk-cfg", "model": "gpt-4o-mini"}, environ=env)
    assert (judge.api_key, judge.model) == ("sk-cfg", "gpt-4o-mini")


def test_resolve_without_anything_is_unconfigured():
    judge = JudgeConfig.resolve(None, environ={})
    assert not judge.configured
    assert judge == JudgeConfig(api_type="openai", api_url=None, api_key=None, model=DEFAULT_JUDGE_MODEL)


def test_empty_key_in_config_disables_the_env_key():
    assert not JudgeConfig.resolve({"api_key": ""}, environ={"OPENAI_API_KEY": "sk-env"}).configured


def test_chat_completions_url_is_cut_to_base():
    judge = JudgeConfig(api_url="https://proxy/v1/chat/completions/")
    assert judge.api_url == "https://proxy/v1"


def test_unsupported_api_type_is_rejected():
    with pytest.raises(ValueError, match="api_type"):
        JudgeConfig.resolve({}, environ={"API_TYPE": "azure"})


# --- plan_tasks ------------------------------------------------------------------------------


def test_no_judge_plan_overrides_only_judged_tasks():
    plan = plan_tasks(SUITE, NO_JUDGE)
    tasks = plan.tasks
    assert tasks[:2] == ["vqav2_val", "mme"]
    mmbench_en, mmbench_cn, mmvet = tasks[2:]
    assert mmvet == {
        "task": "mmvet",
        "process_results": None,
        "metric_list": [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}],
    }
    for name, config in (("mmbench_en_dev", mmbench_en), ("mmbench_cn_dev", mmbench_cn)):
        assert config["task"] == name
        assert config["process_results"] is mmbench_regex_process_results
        assert [metric["metric"] for metric in config["metric_list"]] == ["regex_acc", "needs_judge"]
    assert plan.env == {"API_TYPE": "dummy"}
    assert set(plan.notes) == {"mmbench_en_dev", "mmbench_cn_dev", "mmvet"}


def test_plan_tasks_are_fresh_dicts_on_each_access():
    plan = plan_tasks(["mmvet"], NO_JUDGE)
    plan.tasks[0].pop("task")  # what lmms-eval's TaskManager does to a dict config
    assert plan.tasks[0]["task"] == "mmvet"


def test_judge_plan_keeps_names_and_sets_env():
    plan = plan_tasks(SUITE, JUDGE)
    assert plan.tasks == SUITE
    assert plan.env == {"API_TYPE": "openai", "OPENAI_API_KEY": "sk-test", "MODEL_VERSION": "gpt-4-0613"}
    assert "gpt-4-0613" in plan.notes["mmvet"]


def test_custom_url_is_endpoint_for_mmbench_and_base_for_mmvet():
    judge = JudgeConfig(api_url="https://proxy/v1", api_key="sk-test")
    assert plan_tasks(["mmbench_en_dev"], judge).env["OPENAI_API_URL"] == "https://proxy/v1/chat/completions"
    assert plan_tasks(["mmvet"], judge).env["OPENAI_API_URL"] == "https://proxy/v1"
    with pytest.raises(ValueError, match="separate runs"):
        plan_tasks(["mmbench_en_dev", "mmvet"], judge)


def test_environment_is_set_inside_and_restored_after(monkeypatch):
    monkeypatch.setenv("API_TYPE", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    plan = plan_tasks(["mmvet"], JUDGE)
    with plan.environment():
        assert (os.environ["API_TYPE"], os.environ["OPENAI_API_KEY"]) == ("openai", "sk-test")
    assert os.environ["API_TYPE"] == "openai"
    assert "OPENAI_API_KEY" not in os.environ


# --- MMBench no-judge scoring ----------------------------------------------------------------


def test_mmbench_record_parses_or_marks_unreadable():
    letters = [record["letter"] for record in mmbench_records()]
    assert letters == ["A", "B", "C", None, None, "D"]


def test_unparsed_answers_are_wrong_and_counted():
    records = mmbench_records()
    assert mmbench_circular_accuracy(records) == 50.0  # questions 0 and 3 of 4
    assert mmbench_needs_judge(records) == 2


def test_wrong_letter_fails_the_whole_circular_group():
    records = [
        mmbench_regex_process_results(mmbench_doc(5, "A"), ["A"])["regex_acc"],
        mmbench_regex_process_results(mmbench_doc(1_000_005, "C"), ["B"])["regex_acc"],
    ]
    assert mmbench_circular_accuracy(records) == 0.0
    assert mmbench_needs_judge(records) == 0


def test_circular_copies_without_their_question_give_nan():
    record = mmbench_regex_process_results(mmbench_doc(2_000_004, "A"), ["A"])["regex_acc"]
    assert math.isnan(mmbench_circular_accuracy([record]))


def test_missing_options_are_not_matched_as_text():
    doc = {**mmbench_doc(7, "A"), "D": None}
    record = mmbench_regex_process_results(doc, ["a fish swims"])["regex_acc"]
    assert record["letter"] is None


# --- summarize_results -----------------------------------------------------------------------


def test_summary_without_judge():
    results = {
        "results": {
            "mmvet": {"alias": "mmvet", "bypass,none": 999, "bypass_stderr,none": "N/A"},
            "mmbench_en_dev": {"alias": "mmbench_en_dev", "regex_acc,none": 62.5, "needs_judge,none": 3},
            "vqav2_val": {"alias": "vqav2_val", "exact_match,none": 0.78, "exact_match_stderr,none": "N/A"},
        }
    }
    assert summarize_results(results, NO_JUDGE) == {
        "mmvet": {"status": NO_JUDGE_MMVET},
        "mmbench_en_dev": {"accuracy": 62.5, "needs_judge": 3, "judge": NO_JUDGE_MMBENCH},
        "vqav2_val": {"exact_match": 0.78},
    }


def test_summary_with_judge_counts_failed_mmvet_judgements():
    samples = [
        {"gpt_eval_score": {"eval_model": "gpt-4-0613", "score": 1.0}},
        {"gpt_eval_score": {"eval_model": "", "score": 0.0}},
    ]
    results = {
        "results": {
            "mmvet": {"alias": "mmvet", "gpt_eval_score,none": 50.0},
            "mmbench_cn_dev": {
                "alias": "mmbench_cn_dev",
                "gpt_eval_score,none": 58.1,
                "submission,none": None,
            },
        },
        "samples": {"mmvet": samples},
    }
    assert summarize_results(results, JUDGE) == {
        "mmvet": {"score": 50.0, "judge": "gpt-4-0613", "judge_failures": 1},
        "mmbench_cn_dev": {"accuracy": 58.1, "judge": "gpt-4-0613"},
    }


# --- end to end through lmms-eval, offline ---------------------------------------------------


def fail(*args, **kwargs):
    raise AssertionError("a judge API call was attempted without a configured judge")


@pytest.fixture
def no_network(monkeypatch):
    """Any request to a judge, or MMBench's judge-and-random-letter scoring, fails the test."""
    import requests
    from lmms_eval.llm_judge.providers.openai import OpenAIProvider
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    monkeypatch.setattr(requests, "post", fail)
    monkeypatch.setattr(requests.Session, "request", fail)
    monkeypatch.setattr(OpenAIProvider, "evaluate", fail)
    monkeypatch.setattr(MMBench_Evaluator, "eval_result", fail)
    monkeypatch.setattr(MMBench_Evaluator, "get_chat_response", fail)
    monkeypatch.setattr(time, "sleep", fail)


def canned_model(replies: dict[str, list[str]]):
    """An lmms model answering request i of a task with replies[task][doc_id]."""
    return scripted_lmms(lambda model, request: replies[request.args[4]][request.args[3]])


def local_split(tmp_path, name: str, split: str, rows: list[dict]) -> dict:
    """Task-config overrides that load ``rows`` from a local JSON file instead of the Hub."""
    path = tmp_path / f"{name}.json"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path)}},
    }


def test_no_judge_suite_runs_offline_end_to_end(tmp_path, monkeypatch, no_network):
    """As the runner does it: load the tasks under ``plan.environment()``, then evaluate."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager, get_task_dict

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    mmvet_rows = [
        {"question_id": "v0", "question": "What is 2+2?", "answer": "4", "capability": "math", "image": None},
        {
            "question_id": "v1",
            "question": "Name the animal.",
            "answer": "cat",
            "capability": "rec",
            "image": None,
        },
    ]
    mmbench_rows = [mmbench_doc(index, answer) for index, answer, _ in MMBENCH_ROWS]
    data = {
        "mmvet": local_split(tmp_path, "mmvet", "test", mmvet_rows),
        "mmbench_en_dev": local_split(tmp_path, "mmbench_en", "dev", mmbench_rows),
        "mmbench_cn_dev": local_split(tmp_path, "mmbench_cn", "dev", mmbench_rows),
    }
    plan = plan_tasks(["mmbench_en_dev", "mmbench_cn_dev", "mmvet"], NO_JUDGE)
    tasks = [{**config, **data[config["task"]]} for config in plan.tasks]
    mmbench_replies = [reply for _, _, reply in MMBENCH_ROWS]
    replies = {"mmbench_en_dev": mmbench_replies, "mmbench_cn_dev": mmbench_replies, "mmvet": ["4", "a dog"]}

    with plan.environment():
        task_dict = get_task_dict(tasks, TaskManager())
    results = simple_evaluate(
        model=canned_model(replies), tasks=list(task_dict.values()), log_samples=True, bootstrap_iters=0
    )

    mmbench = {"accuracy": 50.0, "needs_judge": 2, "judge": NO_JUDGE_MMBENCH}
    assert summarize_results(results, NO_JUDGE) == {
        "mmbench_en_dev": mmbench,
        "mmbench_cn_dev": mmbench,
        "mmvet": {"status": NO_JUDGE_MMVET},
    }
    assert "bypass,none" in results["results"]["mmvet"]
    assert [sample["filtered_resps"][0] for sample in results["samples"]["mmvet"]] == ["4", "a dog"]
