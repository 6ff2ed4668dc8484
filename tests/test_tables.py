"""Table rendering from run folders: missing runs, unscored benchmarks, Acc./Rel., latency, agreement;
and the rendering of rows as Markdown, LaTeX, CSV and the Pareto plot."""

import math

import pandas as pd
import pytest
from conftest import compose_config

from evoprune.harness.common.outputs import write_json, write_jsonl, write_text
from evoprune.harness.common.text_tables import latex_table, markdown_table, tex_escape
from evoprune.harness.results.resume import FINAL_FILES, RUN_RECORD, completion_record, identity_config
from evoprune.harness.results.tables import (
    MISSING,
    NOT_SCORED,
    Row,
    agreement,
    agreement_markdown,
    collect,
    csv_frame,
    difference,
    format_value,
    latex,
    markdown,
    normalise_answer,
    paper_rows,
    pareto_plot,
    ttft_markdown,
)

COLUMNS = dict(compose_config("benchmark=image").benchmark.columns)
RUN_CONFIG = identity_config(compose_config())


def fake_run(folder, metrics, answers, total, pre_llm, llm=1.0, ttft=None, **meta):
    """A complete run folder with the given per-task metrics, answers ({task: [answer, ...]}) and latency
    (measured on ``meta``: device cpu, dtype float32, limit None unless given); ``ttft``: (TTFT, model TTFT)
    medians, absent from runs written before model TTFT existed."""
    rows = [
        {"task": task, "doc_id": i, "answer": answer, "error": None}
        for task, task_answers in answers.items()
        for i, answer in enumerate(task_answers)
    ]
    for name in FINAL_FILES:
        write_text(folder / name, "\n")
    write_jsonl(folder / "samples.jsonl", rows)
    write_json(folder / "metrics.json", {"tasks": {t: {"metrics": m} for t, m in metrics.items()}})
    meta = {"device": "cpu", "dtype": "float32", "limit": None, **meta}
    overall = {"total": total, "pre_llm": pre_llm, "llm": llm}
    if ttft is not None:
        overall |= dict(zip(("ttft", "model_ttft"), ttft, strict=True))
    write_json(folder / "latency.json", {"meta": meta, "overall": overall})
    record = completion_record(RUN_CONFIG, samples=len(rows), errors=0, resumed=0)
    write_json(folder / RUN_RECORD, record)


NATIVE_METRICS = {
    "vqav2_val": {"exact_match": 0.785},
    "mme": {"mme_perception_score": 1508.0},
    "mmbench_en_dev": {"accuracy": 61.8, "needs_judge": 0},
    "mmbench_cn_dev": {"accuracy": 58.1, "needs_judge": 0},
    "mmvet": {"status": "not scored (no judge)"},
}
PRUNED_METRICS = {**NATIVE_METRICS, "vqav2_val": {"exact_match": 0.70}}


@pytest.fixture
def rows(tmp_path):
    fake_run(
        tmp_path / "none-all",
        NATIVE_METRICS,
        {"vqav2_val": ["Two", "red"], "mmvet": ["a cat.", "dog"]},
        total=2.0,
        pre_llm=0.5,
    )
    pruned = {**PRUNED_METRICS, "mme": {"mme_perception_score": math.nan}}
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


# --- collect: edge cases of the run folders -----------------------------------------------------


def test_rows_carry_their_run_folder_and_only_complete_runs_their_config(rows, tmp_path):
    native, evoprune, fastervlm = rows
    assert [row.run for row in rows] == [tmp_path / "none-all", tmp_path / "evoprune-64", tmp_path / "fastervlm-64"]
    assert native.config is not None and evoprune.config is not None and fastervlm.config is None


@pytest.mark.parametrize(
    "method, label", [("tome", "ToMe (not in the paper)"), ("my_pruner", "my_pruner (not in the paper)")]
)
def test_a_method_the_paper_lacks_is_labelled_as_not_in_the_paper(tmp_path, method, label):
    (row,) = collect([(method, 64, tmp_path / "never-run")], COLUMNS, "table1")
    assert row.label == label and all(value == MISSING for value in row.values.values())


@pytest.mark.parametrize("native_cell", [True, False], ids=["native-not-run", "no-native-cell"])
def test_without_a_complete_native_acc_is_ours_and_rel_and_latency_are_missing(tmp_path, native_cell):
    fake_run(tmp_path / "evoprune-64", PRUNED_METRICS, {"mme": ["Yes"]}, total=1.0, pre_llm=0.25)
    cells = [("evoprune", 64, tmp_path / "evoprune-64")]
    if native_cell:
        cells.insert(0, ("none", None, tmp_path / "none-all"))  # in the sweep, never run
    evoprune = collect(cells, COLUMNS, "table1")[-1]
    assert evoprune.values["Acc."] == pytest.approx((70.0 + 1508 / 20 + 61.8 + 58.1) * 5 / 4 / 4)
    assert evoprune.values["Rel."] == MISSING and evoprune.values["Overall"] == MISSING
    assert evoprune.agreement == {}


def test_a_run_with_no_counted_score_has_acc_and_rel_missing(tmp_path):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5)
    fake_run(tmp_path / "dart-64", {"mmvet": {"status": "not scored (no judge)"}}, {"mmvet": ["a"]}, 1.0, 0.5)
    cells = [("none", None, tmp_path / "none-all"), ("dart", 64, tmp_path / "dart-64")]
    _, dart = collect(cells, COLUMNS, "table1")
    assert dart.values["Acc."] == MISSING and dart.values["Rel."] == MISSING
    assert dart.values["Overall"] == pytest.approx(0.5)  # its latency still compares


def test_a_column_native_could_not_score_is_left_out_of_ours_too(tmp_path):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5)  # MM-Vet n/s
    judged = {**PRUNED_METRICS, "mmvet": {"score": 30.0}}
    fake_run(tmp_path / "evoprune-64", judged, {"mme": ["Yes"]}, total=1.0, pre_llm=0.25)
    cells = [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")]
    native, evoprune = collect(cells, COLUMNS, "table1")
    assert evoprune.values["MM-Vet"] == pytest.approx(30.0) and native.values["MM-Vet"] == NOT_SCORED
    acc = (70.0 + 1508 / 20 + 61.8 + 58.1) * 5 / 4 / 4  # MM-Vet counts in neither
    assert evoprune.values["Acc."] == pytest.approx(acc)
    assert evoprune.values["Rel."] == pytest.approx(100 * acc / native.values["Acc."])


@pytest.mark.parametrize("meta", [{"device": "NVIDIA H100"}, {"dtype": "bfloat16"}, {"limit": 50}])
def test_latency_is_compared_only_on_the_same_device_dtype_and_limit(tmp_path, meta):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5, **meta)
    fake_run(tmp_path / "dart-32", NATIVE_METRICS, {"mme": ["yes"]}, total=1.0, pre_llm=0.5)
    cells = [("none", None, tmp_path / "none-all"), ("dart", 32, tmp_path / "dart-32")]
    _, dart = collect(cells, COLUMNS, "table1")
    assert all(dart.values[column] == MISSING for column in ("pre-LLM", "LLM", "Overall"))
    assert dart.agreement["MME"] == 1.0  # answers still compare


def test_a_stage_native_has_no_time_for_stays_missing(tmp_path):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5, llm=0.0)
    fake_run(tmp_path / "dart-32", NATIVE_METRICS, {"mme": ["yes"]}, total=1.0, pre_llm=0.25)
    cells = [("none", None, tmp_path / "none-all"), ("dart", 32, tmp_path / "dart-32")]
    _, dart = collect(cells, COLUMNS, "table1")
    assert dart.values["LLM"] == MISSING
    assert dart.values["Overall"] == pytest.approx(0.5) and dart.values["pre-LLM"] == pytest.approx(0.5)


def test_a_table_without_latency_columns_gets_none(tmp_path):
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Yes"]}, total=2.0, pre_llm=0.5)
    fake_run(tmp_path / "evoprune-64", NATIVE_METRICS, {"mme": ["yes"]}, total=1.0, pre_llm=0.25)
    cells = [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")]
    for row in collect(cells, COLUMNS, "table3"):
        assert list(row.values) == ["MVBench", "LongVideoBench", "VideoMME", "Acc.", "Rel."]


def test_answers_are_read_as_utf8_whatever_the_platforms_default_encoding(tmp_path, monkeypatch):
    import builtins

    from evoprune.harness.results import tables

    def cp1252_default(file, mode="r", *args, encoding=None, **kwargs):  # open() where the locale is cp1252
        return builtins.open(file, mode, *args, encoding=encoding or "cp1252", **kwargs)

    monkeypatch.setattr(tables, "open", cp1252_default, raising=False)
    fake_run(tmp_path / "none-all", NATIVE_METRICS, {"mme": ["Été"]}, total=2.0, pre_llm=0.5)
    fake_run(tmp_path / "dart-32", NATIVE_METRICS, {"mme": ["été"]}, total=1.0, pre_llm=0.5)
    cells = [("none", None, tmp_path / "none-all"), ("dart", 32, tmp_path / "dart-32")]
    _, dart = collect(cells, COLUMNS, "table1")
    assert dart.agreement["MME"] == 1.0  # "Été" and "été" are the same answer


@pytest.mark.parametrize(
    "metrics, spec, expected",
    [
        ({"derived": {"mvbench_test": {"value": 0.5}}}, {"derived": "mvbench_test", "scale": 100}, 50.0),
        ({"tasks": {}}, {"derived": "mvbench_test", "scale": 1}, MISSING),  # an image run: no derived metrics
        ({"tasks": {"mme": {"metrics": {"score": 0.25}}}}, {"task": "mme", "metric": "score", "scale": 4}, 1.0),
        ({"tasks": {"mme": {"metrics": {"score": True}}}}, {"task": "mme", "metric": "score", "scale": 1}, NOT_SCORED),
    ],
    ids=["derived-scaled", "no-derived-metrics", "task-scaled", "bool-is-not-a-score"],
)
def test_a_columns_score_is_the_metric_times_its_scale(metrics, spec, expected):
    from evoprune.harness.results.tables import _score

    assert _score(metrics, spec) == expected


@pytest.mark.parametrize("value", [None, pd.NA, math.nan])
def test_a_missing_budget_in_the_papers_table_means_native(value):
    from evoprune.harness.results.tables import _budget

    assert _budget(value) is None


def test_difference_keeps_the_rows_identity_and_skips_rows_the_paper_lacks(tmp_path):
    ours = [
        Row("none", None, "Native", {"VQAv2": 80.0, "MME": MISSING}),
        Row("tome", 64, "ToMe (not in the paper)", {"VQAv2": 70.0}),
        Row("evoprune", 64, "EvoPrune (Ours)", {"VQAv2": 75.0, "Acc.": NOT_SCORED}),
    ]
    native, evoprune = difference(ours, paper_rows("table1"))
    assert (native.method, native.budget, native.label) == ("none", None, "Native")
    assert (evoprune.method, evoprune.budget, evoprune.label) == ("evoprune", 64, "EvoPrune (Ours)")
    assert native.values == {"VQAv2": pytest.approx(1.5), "MME": MISSING}
    assert evoprune.values["VQAv2"] == pytest.approx(75.0 - 75.6) and evoprune.values["Acc."] == MISSING


@pytest.mark.parametrize("text", [None, "", " . ", "?!"])
def test_an_empty_answer_normalises_to_the_empty_string(text):
    assert normalise_answer(text) == ""


# --- rendering: Markdown, LaTeX, CSV ------------------------------------------------------------

RENDER_COLUMNS = ["VQAv2", "MME", "Overall"]


def render_rows():
    """Hand-built rows, listed out of the paper's order: a 64 row before Native, then 32 before another 64."""
    return [
        Row("evoprune", 64, "EvoPrune (Ours)", {"VQAv2": 70.04, "MME": NOT_SCORED, "Overall": 0.456}, {"all": 0.75}),
        Row("none", None, "Native", {"VQAv2": 78.5, "MME": 1508, "Overall": 1.0}),
        Row("fastervlm", 32, "FasterVLM", {}, {"VQAv2": None, "MME": None, "all": None}),
        Row(
            "dart",
            64,
            "DART",
            {"VQAv2": 66.66, "MME": 1399.4, "Overall": 0.5},
            {"VQAv2": 1.0, "MME": 0.125, "all": 0.8},
        ),
    ]


@pytest.mark.parametrize(
    "column, value, signed, text",
    [
        ("Overall", 0.456, False, "0.46"),  # latency: 2 decimals
        ("pre-LLM", 1, True, "+1.00"),
        ("LLM", -0.5, True, "-0.50"),
        ("MME", 1508.4, False, "1508"),  # MME: no decimals
        ("MME", 12.6, True, "+13"),
        ("VQAv2", 78.46, False, "78.5"),  # every other column: 1 decimal
        ("Acc.", 70, True, "+70.0"),
        ("Rel.", -1.26, True, "-1.3"),
        ("VQAv2", MISSING, True, "—"),
        ("MME", NOT_SCORED, False, "n/s"),
    ],
)
def test_format_value_decimals_per_column_and_markers_as_they_are(column, value, signed, text):
    assert format_value(column, value, signed) == text


def test_markdown_groups_native_first_then_each_budget_in_order_of_appearance():
    assert markdown(render_rows(), RENDER_COLUMNS, agree=True) == "\n".join(
        [
            "| Method | Tokens | VQAv2 | MME | Overall | Agree |",
            "|---|---|---:|---:|---:|---:|",
            "| *Upper bound: all visual tokens* | | | | | |",
            "| Native | all | 78.5 | 1508 | 1.00 | — |",
            "| *Retain 64 tokens* | | | | | |",
            "| EvoPrune (Ours) | 64 | 70.0 | n/s | 0.46 | 75.0% |",
            "| DART | 64 | 66.7 | 1399 | 0.50 | 80.0% |",
            "| *Retain 32 tokens* | | | | | |",
            "| FasterVLM | 32 | — | — | — | — |",
        ]
    )


def test_signed_markdown_without_native_or_agreement():
    diff = [
        Row("dart", 32, "DART", {"VQAv2": -1.26, "MME": 12.4, "Overall": MISSING}, {"all": 0.5}),
        Row("evoprune", 64, "EvoPrune (Ours)", {"VQAv2": 0.0, "MME": -3.6, "Overall": 0.04}),
    ]
    assert markdown(diff, RENDER_COLUMNS, signed=True) == "\n".join(
        [
            "| Method | Tokens | VQAv2 | MME | Overall |",
            "|---|---|---:|---:|---:|",
            "| *Retain 32 tokens* | | | | |",
            "| DART | 32 | -1.3 | +12 | — |",
            "| *Retain 64 tokens* | | | | |",
            "| EvoPrune (Ours) | 64 | +0.0 | -4 | +0.04 |",
        ]
    )


def test_agreement_markdown_per_column_in_percent_without_native():
    assert agreement_markdown(render_rows(), ["VQAv2", "MME"]) == "\n".join(
        [
            "| Method | Tokens | VQAv2 | MME | all |",
            "|---|---|---:|---:|---:|",
            "| EvoPrune (Ours) | 64 | — | — | 75.0 |",
            "| FasterVLM | 32 | — | — | — |",
            "| DART | 64 | 100.0 | 12.5 | 80.0 |",
        ]
    )


@pytest.mark.parametrize(
    "text, tex",
    [
        ("EvoPrune (w/o Attn&Div)", r"EvoPrune (w/o Attn\&Div)"),
        ("50%", r"50\%"),
        ("pre_llm", r"pre\_llm"),
        ("#3", r"\#3"),
        ("—", "--"),
        ("~2x", r"$\sim$2x"),
        ("§4.2", r"\S{}4.2"),
        ("Native 1.00 n/s", "Native 1.00 n/s"),
    ],
)
def test_tex_escape(text, tex):
    assert tex_escape(text) == tex


@pytest.mark.parametrize(
    "left, rule", [(1, "| --- | ---: | ---: |"), (2, "| --- | --- | ---: |")], ids=["one-left", "two-left"]
)
def test_markdown_table_aligns_the_first_columns_left(left, rule):
    cells = [["Method", "Tokens", "Acc."], ["EvoPrune", "64", "57.1"], ["Native", "all", "60.0"]]
    expected = ["| Method | Tokens | Acc. |", rule, "| EvoPrune | 64 | 57.1 |", "| Native | all | 60.0 |"]
    assert markdown_table(cells, left=left) == "\n".join(expected)


def test_latex_table_escapes_every_cell():
    cells = [["Method", "Tokens", "Acc. %"], ["A&B_1", "64", "—"]]
    assert latex_table(cells, left=2) == "\n".join(
        [
            r"\begin{tabular}{llr}",
            r"\toprule",
            r"Method & Tokens & Acc. \% \\",
            r"\midrule",
            r"A\&B\_1 & 64 & -- \\",
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )
    assert latex_table(cells).startswith(r"\begin{tabular}{lrr}")


def test_latex_blocks_sections_and_escaped_cells():
    ours = [
        Row("evoprune_no_attn_no_div", 64, "EvoPrune (w/o Attn&Div)", {"VQAv2": 70.04, "MME": NOT_SCORED}),
        Row("none", None, "Native", {"VQAv2": 78.5, "MME": 1508, "Overall": 1.0, "Rel. %": 100.0}),
    ]
    diff = [Row("none", None, "Native", {"VQAv2": 0.04, "MME": -3.6, "Overall": MISSING, "Rel. %": 0.0})]
    blocks = [("ours", ours, False), ("ours − paper, in %", diff, True)]
    assert latex(blocks, [*RENDER_COLUMNS, "Rel. %"]) == "\n".join(
        [
            r"\begin{tabular}{llrrrr}",
            r"\toprule",
            r"Method & Tokens & VQAv2 & MME & Overall & Rel. \% \\",
            r"\midrule",
            r"\multicolumn{6}{l}{\textbf{ours}} \\",
            r"\multicolumn{6}{l}{\textit{Upper bound: all visual tokens}} \\",
            r"Native & all & 78.5 & 1508 & 1.00 & 100.0 \\",
            r"\multicolumn{6}{l}{\textit{Retain 64 tokens}} \\",
            r"EvoPrune (w/o Attn\&Div) & 64 & 70.0 & n/s & -- & -- \\",
            r"\midrule",
            r"\multicolumn{6}{l}{\textbf{ours − paper, in \%}} \\",
            r"\multicolumn{6}{l}{\textit{Upper bound: all visual tokens}} \\",
            r"Native & all & +0.0 & -4 & -- & +0.0 \\",
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )


def test_csv_frame_stacks_the_blocks_with_agreement_columns_for_ours():
    ours = render_rows()[:2]
    paper = [Row("none", None, "Native", {"VQAv2": 78.5, "MME": 1508.0, "Overall": 1.0})]
    frame = csv_frame([("ours", ours, False), ("paper", paper, False)], RENDER_COLUMNS)
    assert list(frame.columns) == ["table", "method", "label", "budget", *RENDER_COLUMNS, "agree all"]
    assert frame["table"].tolist() == ["ours", "ours", "paper"]
    assert frame["method"].tolist() == ["evoprune", "none", "none"]
    assert frame["label"].tolist() == ["EvoPrune (Ours)", "Native", "Native"]
    assert frame["budget"].tolist()[0] == 64 and frame["budget"].isna().tolist() == [False, True, True]
    assert frame["VQAv2"].tolist() == [70.04, 78.5, 78.5] and frame["MME"].tolist() == [NOT_SCORED, 1508, 1508.0]
    assert frame["agree all"].tolist()[0] == 0.75 and frame["agree all"].isna().tolist() == [False, True, True]
    budgets_in_csv = frame.to_csv(index=False, na_rep=MISSING).splitlines()[1:]
    assert [line.split(",")[3] for line in budgets_in_csv] == ["64", MISSING, MISSING]  # not 64.0


def test_csv_frame_marks_missing_values_and_has_a_column_per_agreement():
    rows = render_rows()[2:]  # FasterVLM (nothing run), DART
    frame = csv_frame([("ours", rows, False)], ["VQAv2", "Acc."])
    assert frame["VQAv2"].tolist() == [MISSING, 66.66] and frame["Acc."].tolist() == [MISSING, MISSING]
    assert [c for c in frame.columns if c.startswith("agree ")] == ["agree VQAv2", "agree MME", "agree all"]
    assert frame["agree MME"].tolist()[1] == 0.125 and frame["agree all"].tolist()[1] == 0.8


# --- the Pareto plot --------------------------------------------------------------------------


def plot_row(method, budget, label, overall, acc):
    return Row(method, budget, label, {"Overall": overall, "Acc.": acc, "VQAv2": 1.0})


@pytest.fixture
def drawn(monkeypatch):
    """What pareto_plot hands to write_figure: {"path", "titles", "panels": [[point, ...] per axes], "legends":
    [[(label, colour), ...] per axes]}, a point being (x, y, marker vertices, colour, annotation)."""
    import matplotlib.pyplot as plt

    from evoprune.harness.results import tables

    seen = {}

    def capture(figure, path, **savefig):
        seen["path"] = path
        panels = []
        for ax in figure.axes:
            texts = [(t.get_text(), tuple(t.xy)) for t in ax.texts]
            points = []
            for collection, (tag, xy) in zip(ax.collections, texts, strict=True):
                (x, y), vertices = collection.get_offsets()[0], collection.get_paths()[0].vertices
                assert len(collection.get_offsets()) == 1 and xy == (x, y)
                points.append((float(x), float(y), vertices, tuple(collection.get_facecolor()[0]), tag))
            panels.append(points)
        seen["panels"] = panels
        legends = [ax.get_legend() for ax in figure.axes]
        seen["legends"] = [
            [
                (t.get_text(), tuple(h.get_facecolor()[0]))
                for t, h in zip(lg.get_texts(), lg.legend_handles, strict=True)
            ]
            for lg in legends
        ]
        seen["titles"] = [ax.get_title() for ax in figure.axes]
        plt.close(figure)

    monkeypatch.setattr(tables, "write_figure", capture)
    return seen


def marker_vertices(marker):
    from matplotlib.markers import MarkerStyle

    style = MarkerStyle(marker)
    return style.get_path().transformed(style.get_transform()).vertices


@pytest.mark.parametrize(
    "ours",
    [
        [],
        [plot_row("none", None, "Native", 1.0, MISSING)],
        [plot_row("none", None, "Native", MISSING, 60.0), plot_row("dart", 64, "DART", NOT_SCORED, 55.0)],
    ],
    ids=["no-rows", "no-acc", "no-latency"],
)
def test_pareto_plot_draws_nothing_until_a_row_has_both_values(tmp_path, drawn, ours):
    paper = [plot_row("none", None, "Native", 1.0, 76.5)]
    assert pareto_plot(ours, paper, tmp_path / "pareto.png", "t") is False
    assert drawn == {} and not (tmp_path / "pareto.png").exists()


def test_pareto_plot_puts_each_rows_overall_and_acc_in_its_panel(tmp_path, drawn):
    ours = [
        plot_row("none", None, "Native", 1.0, 60.0),
        plot_row("evoprune", 64, "EvoPrune (Ours)", 0.5, 57.0),
        plot_row("fastervlm", 32, "FasterVLM", MISSING, 55.0),  # not timed: left out
        plot_row("dart", 64, "DART", 0.6, NOT_SCORED),  # no Acc.: left out
        plot_row("vispruner", 32, "VisPruner", 0.4, 50),
    ]
    paper = [
        plot_row("none", None, "Native", 1.0, 76.5),
        plot_row("dart", 64, "DART", 0.7, 70.0),
        plot_row("dart", 32, "DART", 0.6, 65.0),
        plot_row("evoprune", 64, "EvoPrune (Ours)", 0.45, 72.0),
    ]
    assert pareto_plot(ours, paper, tmp_path / "pareto.png", "Table 1: t") is True
    assert drawn["path"] == tmp_path / "pareto.png"
    ours_panel, paper_panel = drawn["panels"]
    # x: the speedup over Native, 1 ÷ the Overall relative latency
    assert [(x, y, tag) for x, y, _, _, tag in ours_panel] == [(1.0, 60.0, "all"), (2.0, 57.0, "64"), (2.5, 50, "32")]
    assert [(x, y, tag) for x, y, _, _, tag in paper_panel] == [
        (1.0, 76.5, "all"),
        (pytest.approx(1 / 0.7), 70.0, "64"),
        (pytest.approx(1 / 0.6), 65.0, "32"),
        (pytest.approx(1 / 0.45), 72.0, "64"),
    ]
    assert drawn["titles"] == ["ours", "paper"]
    star, circle = marker_vertices("*"), marker_vertices("o")
    for panel in (ours_panel, paper_panel):  # Native a star, the others circles
        assert [v.shape == star.shape and (v == star).all() for _, _, v, _, _ in panel[:2]] == [True, False]
        assert all(v.shape == circle.shape and (v == circle).all() for _, _, v, _, _ in panel[1:])
    colours = {"ours": [c for *_, c, _ in ours_panel], "paper": [c for *_, c, _ in paper_panel]}
    assert len(set(colours["ours"])) == 3 and colours["paper"][0] == colours["ours"][0]  # one colour per method
    assert colours["paper"][3] == colours["ours"][1] and colours["paper"][1] not in colours["ours"]
    assert colours["paper"][2] == colours["paper"][1]  # both DART points
    legend_ours, legend_paper = drawn["legends"]  # each label once, in the colour of its points
    assert legend_ours == [("Native", colours["ours"][0]), ("EvoPrune (Ours)", colours["ours"][1])] + [
        ("VisPruner", colours["ours"][2])
    ]
    assert legend_paper == [("Native", colours["paper"][0]), ("DART", colours["paper"][1])] + [
        ("EvoPrune (Ours)", colours["paper"][3])
    ]


def test_pareto_plot_without_an_overall_column_uses_ttft_speedups_and_no_paper_panel(tmp_path, drawn):
    """Tables 2 and 3 print no latency: our x is Native's median TTFT ÷ the run's; the paper, with no point,
    gets no panel."""
    answers = {"vqav2_val": ["two"]}
    fake_run(tmp_path / "none-all", NATIVE_METRICS, answers, total=2.0, pre_llm=0.5, ttft=(0.8, 0.6))
    fake_run(tmp_path / "evoprune-64", PRUNED_METRICS, answers, total=1.0, pre_llm=0.2, ttft=(0.2, 0.15))
    ours = [
        Row("none", None, "Native", {"Acc.": 60.0}, run=tmp_path / "none-all", config={}),
        Row("evoprune", 64, "EvoPrune (Ours)", {"Acc.": 55.0}, run=tmp_path / "evoprune-64", config={}),
        Row("dart", 64, "DART", {"Acc.": 50.0}),  # no complete run: no time, left out
    ]
    paper = [Row("none", None, "Native", {"Acc.": 58.0}), Row("evoprune", 64, "EvoPrune (Ours)", {"Acc.": 57.7})]
    assert pareto_plot(ours, paper, tmp_path / "pareto.png", "Table 3: t") is True
    (panel,) = drawn["panels"]
    assert [(x, y, tag) for x, y, _, _, tag in panel] == [(1.0, 60.0, "all"), (4.0, 55.0, "64")]
    assert drawn["titles"] == ["ours"]


def test_pareto_plot_writes_the_png(tmp_path):
    rows = [plot_row("none", None, "Native", 1.0, 60.0)]
    assert pareto_plot(rows, [], tmp_path / "figures" / "pareto.png", "t") is True
    assert (tmp_path / "figures" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ttft_section_gives_each_runs_medians_in_ms_and_their_ratio_to_natives(tmp_path):
    answers = {"vqav2_val": ["two"]}
    fake_run(tmp_path / "none-all", NATIVE_METRICS, answers, total=2.0, pre_llm=0.5, ttft=(0.8, 0.6))
    fake_run(tmp_path / "evoprune-64", PRUNED_METRICS, answers, total=1.0, pre_llm=0.2, ttft=(0.4, 0.15))
    fake_run(tmp_path / "tome-64", PRUNED_METRICS, answers, total=1.0, pre_llm=0.2)  # before model TTFT existed
    cells = [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")]
    cells += [("tome", 64, tmp_path / "tome-64"), ("fastervlm", 64, tmp_path / "fastervlm-64")]  # the last never ran
    lines = ttft_markdown(collect(cells, COLUMNS, "table1")).splitlines()
    assert lines[0] == "| Method | Tokens | TTFT ms | speedup | model TTFT ms | speedup |"
    assert lines[1] == "| --- | --- | ---: | ---: | ---: | ---: |"
    assert lines[2] == "| Native | all | 800.0 | 1.00x | 600.0 | 1.00x |"
    assert lines[3] == "| EvoPrune (Ours) | 64 | 400.0 | 2.00x | 150.0 | 4.00x |"
    assert lines[4].endswith("| 64 | — | — | — | — |") and lines[5] == "| FasterVLM | 64 | — | — | — | — |"


def test_ttft_section_without_a_native_run_gives_times_but_no_speedups(tmp_path):
    fake_run(tmp_path / "evoprune-64", PRUNED_METRICS, {"vqav2_val": ["two"]}, total=1.0, pre_llm=0.2, ttft=(0.4, 0.15))
    cells = [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")]  # Native never ran
    lines = ttft_markdown(collect(cells, COLUMNS, "table1")).splitlines()
    assert lines[2:] == ["| Native | all | — | — | — | — |", "| EvoPrune (Ours) | 64 | 400.0 | — | 150.0 | — |"]
