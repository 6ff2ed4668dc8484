"""The paper's numbers in results/paper/ against its text, and the Acc./Rel. formulas of
evoprune.harness.results.paper."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from evoprune.harness.results.paper import (
    PAPER_DIR,
    RESIDUAL,
    SPECS,
    Aggregate,
    aggregate,
    load_paper_table,
    round_like_paper,
)

PAPER_TXT = Path(__file__).resolve().parents[1].parent / "shared/reference/evoprune-paper-2603.03681.txt"

# Where each table starts in the text, and how its budget sections are headed.
TABLE_START = {
    "table1": r"Table 1: ",
    "table2": r"Table 2: ",
    "table3": r"Method\s+MVBench LongVideoBench VideoMME",
}
SECTION = {"table1": r"Retain {b} Tokens", "table2": r"Retain 64 \S*\s*{b} Tokens"}

# (method, budget or None for Native, column): a dozen cells per table, spread over rows and columns.
CELLS = {
    "table1": [
        ("none", None, "VQAv2"),
        ("none", None, "MME"),
        ("none", None, "Rel."),
        ("fastervlm", 128, "MMB-EN"),
        ("vispruner", 128, "pre-LLM"),
        ("cdpruner", 128, "Overall"),
        ("evoprune", 128, "Acc."),
        ("dart", 64, "MME"),
        ("divprune", 64, "MM-Vet"),
        ("evoprune", 64, "Rel."),
        ("vispruner", 32, "MMB-CN"),
        ("cdpruner", 32, "LLM"),
        ("evoprune", 32, "VQAv2"),
    ],
    "table2": [
        ("none", None, "MVBench test"),
        ("none", None, "Acc."),
        ("fastervlm", 64, "LongVideoBench val"),
        ("vispruner", 64, "Video-MME long"),
        ("evoprune", 64, "pre-LLM"),
        ("evoprune", 64, "Rel."),
        ("dart", 32, "LongVideoBench perception"),
        ("divprune", 32, "Video-MME w/o sub"),
        ("cdpruner", 32, "LongVideoBench relation"),
        ("fastervlm", 16, "Video-MME short"),
        ("dart", 16, "Video-MME medium"),
        ("evoprune", 16, "Overall"),
        ("evoprune", 16, "Acc."),
    ],
    "table3": [
        ("none", None, "MVBench"),
        ("none", None, "Rel."),
        ("evoprune_no_attn_no_div", 64, "MVBench"),
        ("evoprune_no_attn_no_div", 64, "Acc."),
        ("evoprune_no_attn", 64, "LongVideoBench"),
        ("evoprune_no_attn", 64, "VideoMME"),
        ("evoprune_no_attn", 64, "Rel."),
        ("evoprune_no_div", 64, "MVBench"),
        ("evoprune_no_div", 64, "Acc."),
        ("evoprune", 64, "LongVideoBench"),
        ("evoprune", 64, "VideoMME"),
        ("evoprune", 64, "Rel."),
    ],
}

# Printed cells the formulas do not reproduce (the paper averaged unrounded scores): (method, budget, column).
MISSES = {
    "table1": {
        ("vispruner", 64, "Acc."),
        ("dart", 64, "Rel."),
        ("vispruner", 32, "Rel."),
        ("dart", 32, "Rel."),
        ("divprune", 32, "Rel."),
    },
    "table2": {
        ("fastervlm", 32, "Acc."),
        ("cdpruner", 32, "Acc."),
        ("evoprune", 32, "Acc."),
        ("evoprune", 16, "Acc."),
        ("dart", 64, "Rel."),
        ("evoprune", 64, "Rel."),
        ("cdpruner", 32, "Rel."),
        ("evoprune", 32, "Rel."),
        ("dart", 16, "Rel."),
    },
    "table3": {
        ("evoprune_no_attn_no_div", 64, "Acc."),
        ("evoprune_no_attn_no_div", 64, "Rel."),
        ("evoprune", 64, "Rel."),
    },
}


@pytest.fixture(scope="module")
def paper_lines() -> list[str]:
    if not PAPER_TXT.exists():
        pytest.skip(f"paper text not found at {PAPER_TXT}")
    return PAPER_TXT.read_text(encoding="utf-8").splitlines()


def read_csv(name: str) -> list[dict[str, str]]:
    with open(PAPER_DIR / f"{name}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_row(rows: list[dict[str, str]], method: str, budget: int | None) -> dict[str, str]:
    (row,) = [r for r in rows if r["method"] == method and r["budget"] == ("" if budget is None else str(budget))]
    return row


def paper_tokens(lines: list[str], table: str, label: str, budget: int | None) -> list[str]:
    """The numbers on the paper's line for this row, % signs stripped."""
    start = next(i for i, line in enumerate(lines) if re.match(TABLE_START[table], line))
    if budget is not None and table in SECTION:
        pattern = SECTION[table].format(b=budget)
        start = next(i for i in range(start, len(lines)) if re.match(pattern, lines[i]))
    row = re.compile(rf"{re.escape(label)}\s+(\d[\d.%\s]*)$")
    for line in lines[start + 1 : start + 30]:
        if match := row.match(line.strip()):
            return [token.rstrip("%") for token in match.group(1).split()]
    raise AssertionError(f"no line for {label!r} (budget {budget}) in {table}")


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_csv_cells_match_paper_text(paper_lines, table):
    rows = read_csv(table)
    columns = list(rows[0])[3:]
    for method, budget, column in CELLS[table]:
        row = csv_row(rows, method, budget)
        tokens = paper_tokens(paper_lines, table, row["label"], budget)
        assert len(tokens) == len(columns), (table, row["label"], tokens)
        assert row[column] == tokens[columns.index(column)], (table, method, budget, column)


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_every_csv_row_is_a_paper_line(paper_lines, table):
    rows = read_csv(table)
    for row in rows:
        budget = int(row["budget"]) if row["budget"] else None
        assert paper_tokens(paper_lines, table, row["label"], budget) == list(row.values())[3:]


def test_table3_evoprune_is_table2_at_64_per_frame():
    t2 = csv_row(read_csv("table2"), "evoprune", 64)
    t3 = csv_row(read_csv("table3"), "evoprune", 64)
    pairs = {"MVBench": "MVBench test", "LongVideoBench": "LongVideoBench val", "VideoMME": "Video-MME w/o sub"}
    assert all(t3[a] == t2[b] for a, b in pairs.items())
    assert (t3["Acc."], t3["Rel."]) == (t2["Acc."], t2["Rel."])


def test_appendix_a_numbers_in_text(paper_lines):
    text = "\n".join(paper_lines)
    appendix = text[text.index("Appendix A Analysis") : text.index("Appendix B Benchmarks")]
    rows = {(r["strategy"], r["budget"], r["benchmark"], r["metric"]): r["value"] for r in read_csv("appendix_a")}
    assert (
        re.search(r"First16 reaches (\S+)s on Video-MME", appendix).group(1)
        == rows["First", "16", "Video-MME", "encode_time_s"]
    )
    assert (
        re.search(r"Decreasing16 where the accuracy on MVBench drops to ([\d.]+)%", appendix).group(1)
        == rows["Decreasing", "16", "MVBench", "accuracy"]
    )
    skip64 = re.search(
        r"Skip64 achieves a superior accuracy of ([\d.]+)% on Video-MME with a latency of ([\d.]+)s", appendix
    )
    assert skip64.groups() == (
        rows["Skip", "64", "Video-MME", "accuracy"],
        rows["Skip", "64", "Video-MME", "encode_time_s"],
    )
    mean64 = re.search(r"Mean strategy \(([\d.]+)%, ([\d.]+)s\)", appendix)
    assert mean64.groups() == (
        rows["Mean", "64", "Video-MME", "accuracy"],
        rows["Mean", "64", "Video-MME", "encode_time_s"],
    )
    b16 = re.search(r"Skip maintains ([\d.]+)% .*?Mean \(([\d.]+)%\) and First \(([\d.]+)%\)", appendix)
    assert b16.groups() == tuple(rows[s, "16", "Video-MME", "accuracy"] for s in ("Skip", "Mean", "First"))
    window = re.search(r"window size N=(\d+)\S* for First and Last \(out of (\d+) total layers\)", appendix)
    assert window.groups() == (rows["First", "", "", "window_layers"], rows["", "", "", "encoder_layers"])
    assert rows["Last", "", "", "window_layers"] == window.group(1)
    alpha = re.search(r"growth/decay rate α=(\d+)", appendix)
    assert alpha.group(1) == rows["Increasing", "", "", "alpha"] == rows["Decreasing", "", "", "alpha"]
    assert (
        re.search(r"up to ([\d.]+)% on Video-MME", appendix).group(1)
        == rows["Last|Increasing", "", "Video-MME", "accuracy_max"]
    )


def _scores(row: dict[str, str], table: str) -> dict[str, float]:
    return {col: float(row[col]) for col in SPECS[table].scales}


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_aggregate_reproduces_printed_acc_and_rel(table):
    rows = read_csv(table)
    native = _scores(csv_row(rows, "none", None), table)
    missed = set()
    for row in rows:
        result = aggregate(table, _scores(row, table), native)
        assert result.complete and result.left_out == ()
        budget = int(row["budget"]) if row["budget"] else None
        for column, value in (("Acc.", result.acc), ("Rel.", result.rel)):
            printed = float(row[column])
            assert abs(value - printed) <= RESIDUAL[table][column], (row["label"], budget, column, value)
            if round_like_paper(value) != printed:
                missed.add((row["method"], budget, column))
    assert missed == MISSES[table]


def test_reproduced_cell_counts():
    counts = {table: 2 * len(read_csv(table)) - len(MISSES[table]) for table in SPECS}
    assert counts == {"table1": 33, "table2": 29, "table3": 7}  # of 38, 38 and 10 Acc./Rel. cells


def test_table1_normalisation_examples():
    native = {"VQAv2": 78.5, "MME": 1508, "MMB-EN": 61.8, "MMB-CN": 58.1, "MM-Vet": 32.2}
    assert aggregate("table1", native, native).acc == pytest.approx(76.5)  # (78.5 + 75.4 + 61.8 + 58.1 + 32.2) / 4
    assert round_like_paper(72.25) == 72.2 and round_like_paper(64.55) == 64.5 and round_like_paper(69.86) == 69.9


def test_none_score_is_left_out_not_zero():
    native = {"MVBench test": 58.0, "LongVideoBench val": 56.0, "Video-MME w/o sub": 59.7}
    scores = {"MVBench test": 56.9, "LongVideoBench val": None, "Video-MME w/o sub": 60.6}
    result = aggregate("table2", scores, native)
    assert result.left_out == ("LongVideoBench val",) and not result.complete
    assert result.acc == pytest.approx((56.9 + 60.6) / 2)
    assert result.rel == pytest.approx(100 * (56.9 + 60.6) / (58.0 + 59.7))


def test_none_native_column_is_left_out_of_both():
    native = {"MVBench": 58.0, "LongVideoBench": math.nan, "VideoMME": 59.7}
    result = aggregate("table3", {"MVBench": 56.9, "LongVideoBench": 55.5, "VideoMME": 60.6}, native)
    assert result.left_out == ("LongVideoBench",)
    assert result.acc == pytest.approx((56.9 + 60.6) / 2)


def test_table1_left_out_keeps_the_papers_scale():
    native = {"VQAv2": 78.5, "MME": 1508, "MMB-EN": 61.8, "MMB-CN": 58.1, "MM-Vet": 32.2}
    result = aggregate("table1", {**native, "MM-Vet": None}, native)
    assert result.left_out == ("MM-Vet",)
    assert result.acc == pytest.approx((78.5 + 75.4 + 61.8 + 58.1) / 4 * 5 / 4)
    assert result.rel == pytest.approx(100.0)


def test_native_none_gives_no_rel():
    result = aggregate("table3", {"MVBench": 56.9, "LongVideoBench": 55.5, "VideoMME": 60.6}, None)
    assert result.rel is None and result.acc == pytest.approx(57.666666) and result.complete


def test_unknown_table_names_accepted_ones():
    with pytest.raises(ValueError, match="table1, table2, table3"):
        aggregate("table4", {}, None)
    with pytest.raises(ValueError, match="table1, table2, table3"):
        load_paper_table("Table 1")


def test_load_paper_table():
    t1 = load_paper_table("table1")
    assert list(t1.columns[:3]) == ["method", "label", "budget"] and len(t1) == 19
    assert t1["budget"].isna().tolist() == [True] + [False] * 18
    t3 = load_paper_table("table3")
    assert t3["method"].tolist() == [
        "none",
        "evoprune_no_attn_no_div",
        "evoprune_no_attn",
        "evoprune_no_div",
        "evoprune",
    ]


def test_a_row_with_every_counted_column_missing_has_no_acc_nor_rel():
    result = aggregate("table3", {"MVBench": None, "LongVideoBench": float("nan")}, None)
    assert result == Aggregate(None, None, ("MVBench", "LongVideoBench", "VideoMME"), False)


def test_rel_is_undefined_only_when_natives_acc_is_zero():
    zero = {"MVBench": 0.0, "LongVideoBench": 0.0, "VideoMME": 0.0}
    assert aggregate("table3", {"MVBench": 3.0, "LongVideoBench": 0.0, "VideoMME": 0.0}, zero).rel is None
    one = {"MVBench": 3.0, "LongVideoBench": 0.0, "VideoMME": 0.0}  # Native's Acc. exactly 1
    assert aggregate("table3", {"MVBench": 1.5, "LongVideoBench": 0.0, "VideoMME": 0.0}, one).rel == 50.0


def test_paper_tables_keep_budgets_as_integers_and_labels_as_text():
    table = load_paper_table("table1")
    assert str(table["budget"].dtype) == "Int64" and table["budget"].isna().sum() == 1  # Native only
    assert table["label"].map(type).eq(str).all() and table["method"].map(type).eq(str).all()
