"""Table rendering from run folders: missing runs, unscored benchmarks, Acc./Rel., latency, agreement."""

import math

import pytest
from conftest import compose_config

from evoprune.harness.outputs import write_json, write_jsonl, write_text
from evoprune.harness.resume import FINAL_FILES, RUN_RECORD, completion_record, identity_config
from evoprune.harness.tables import MISSING, NOT_SCORED, agreement, collect, difference, normalise_answer, paper_rows

COLUMNS = dict(compose_config("benchmark=image").benchmark.columns)


def fake_run(folder, metrics, answers, total, pre_llm, device="cpu"):
    """A complete run folder with the given per-task metrics, answers ({task: [answer, ...]}) and latency."""
    rows = [
        {"task": task, "doc_id": i, "answer": answer, "error": None}
        for task, task_answers in answers.items()
        for i, answer in enumerate(task_answers)
    ]
    for name in FINAL_FILES:
        write_text(folder / name, "\n")
    write_jsonl(folder / "samples.jsonl", rows)
    write_json(folder / "metrics.json", {"tasks": {t: {"metrics": m} for t, m in metrics.items()}})
    meta = {"device": device, "dtype": "float32", "limit": None}
    write_json(folder / "latency.json", {"meta": meta, "overall": {"total": total, "pre_llm": pre_llm, "llm": 1.0}})
    record = completion_record(identity_config(compose_config()), samples=len(rows), errors=0, resumed=0)
    write_json(folder / RUN_RECORD, record)


NATIVE_METRICS = {
    "vqav2_val": {"exact_match": 0.785},
    "mme": {"mme_perception_score": 1508.0},
    "mmbench_en_dev": {"accuracy": 61.8, "needs_judge": 0},
    "mmbench_cn_dev": {"accuracy": 58.1, "needs_judge": 0},
    "mmvet": {"status": "not scored (no judge)"},
}


@pytest.fixture
def rows(tmp_path):
    fake_run(
        tmp_path / "none-all",
        NATIVE_METRICS,
        {"vqav2_val": ["Two", "red"], "mmvet": ["a cat.", "dog"]},
        total=2.0,
        pre_llm=0.5,
    )
    pruned = {**NATIVE_METRICS, "vqav2_val": {"exact_match": 0.70}, "mme": {"mme_perception_score": math.nan}}
    fake_run(
        tmp_path / "evoprune-64",
        pruned,
        {"vqav2_val": ["two ", "blue"], "mmvet": ["A cat", "dog"]},
        total=1.0,
        pre_llm=0.25,
    )
    cells = [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")]
    cells.append(("fastervlm", 64, tmp_path / "fastervlm-64"))  # never run
    return collect(cells, COLUMNS, "table1")


def test_scores_scaled_unscored_and_missing(rows):
    native, evoprune, fastervlm = rows
    assert native.label == "Native" and evoprune.label == "EvoPrune (Ours)"
    assert native.values["VQAv2"] == pytest.approx(78.5) and native.values["MME"] == 1508.0
    assert native.values["MM-Vet"] == NOT_SCORED  # no judge: never a 0
    assert evoprune.values["MME"] == NOT_SCORED  # NaN from lmms-eval
    assert all(value == MISSING for value in fastervlm.values.values())  # no run: "—", never 0


def test_acc_and_rel_leave_unscored_columns_out(rows):
    native, evoprune, _ = rows
    # Native: (78.5 + 61.8 + 58.1) over the three scored columns, scaled as the paper's sum / 4 of five
    assert native.values["Acc."] == pytest.approx((78.5 + 1508 / 20 + 61.8 + 58.1) * 5 / 4 / 4)
    assert native.values["Rel."] == pytest.approx(100.0)
    # EvoPrune: MME is n/s, so it is left out of its Acc. and of the Native Acc. it is divided by
    expected = (70.0 + 61.8 + 58.1) * 5 / 4 / 3
    assert evoprune.values["Acc."] == pytest.approx(expected)
    assert evoprune.values["Rel."] == pytest.approx(100 * expected / ((78.5 + 61.8 + 58.1) * 5 / 4 / 3))


def test_relative_latency_and_agreement(rows):
    native, evoprune, _ = rows
    assert evoprune.values["Overall"] == pytest.approx(0.5) and evoprune.values["pre-LLM"] == pytest.approx(0.5)
    assert native.values["Overall"] == pytest.approx(1.0)
    assert evoprune.agreement["VQAv2"] == 0.5  # "two " = "Two"; "blue" != "red"
    assert evoprune.agreement["MM-Vet"] == 1.0  # agreement needs no judge
    assert evoprune.agreement["all"] == 0.75
    assert "all" not in native.agreement


def test_latency_from_another_machine_is_not_compared(tmp_path):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5, device="NVIDIA H100")
    fake_run(tmp_path / "dart-32", NATIVE_METRICS, {"mme": ["yes"]}, total=1.0, pre_llm=0.5)
    cells = [("none", None, tmp_path / "none-all"), ("dart", 32, tmp_path / "dart-32")]
    _, dart = collect(cells, COLUMNS, "table1")
    assert dart.values["Overall"] == MISSING and dart.agreement["MME"] == 1.0


def test_difference_with_the_paper(rows):
    paper = paper_rows("table1")
    diff = difference(rows, paper)
    assert diff[0].values["VQAv2"] == pytest.approx(0.0)
    assert diff[0].values["MM-Vet"] == MISSING and diff[2].values["VQAv2"] == MISSING
    assert paper[1].label == "FasterVLM" and paper[1].budget == 128 and paper[0].budget is None


def test_sample_errors_count_as_disagreement():
    ours = {("t", 0): {"answer": "a", "error": "ValueError: x"}, ("t", 1): {"answer": "b", "error": None}}
    native = {("t", 0): {"answer": "a", "error": None}, ("t", 1): {"answer": "B.", "error": None}}
    assert agreement(ours, native, ["t"]) == 0.5
    assert agreement(ours, native, ["other"]) is None
    assert normalise_answer("  The  Cat. ") == "the cat"


def test_a_sample_both_runs_failed_does_not_agree():
    marker = "[sample error: see samples.jsonl]"  # both answers are the error marker
    ours = {("t", 0): {"answer": marker, "error": "OSError: x"}, ("t", 1): {"answer": "b", "error": None}}
    native = {("t", 0): {"answer": marker, "error": "OSError: x"}, ("t", 1): {"answer": "b", "error": None}}
    assert agreement(ours, native, ["t"]) == 0.5
    native_failed = {("t", 0): {"answer": "a", "error": "OSError: x"}, ("t", 1): native[("t", 1)]}
    ours_ok = {("t", 0): {"answer": "a", "error": None}, ("t", 1): ours[("t", 1)]}
    assert agreement(ours_ok, native_failed, ["t"]) == 0.5  # Native failed alone: no agreement either
