"""An experiment's runs rendered in the paper's table layout, beside the paper's own values.

For each cell of the experiment (`configs/experiment/*.yaml`) the run folder is found exactly as the
runner names it, and read only if it is complete (`resume.read_complete`). Scores come from the
benchmark config's ``columns`` mapping: paper column → ``{task, metric, scale}`` (lmms-eval's
``metrics["tasks"][task]["metrics"][metric]``) or ``{derived, scale}`` (``metrics["derived"][name]["value"]``,
a number computed from the per-sample rows by `video_metrics`); Acc. and Rel.
from `paper.aggregate` (the paper's own formulas); relative latency = the run's median stage time ÷
Native's, from the same sweep and machine; agreement with Native = the share of samples whose
normalised answer equals Native's answer for the same sample (for a derived column, the samples
that count in that derived metric).

Cell markers: "—" the run is missing or incomplete, or the suite has no task for the column;
"n/s" the benchmark was run but could not be scored (MM-Vet without a judge; a score lmms-eval
returned as NaN). Neither counts in Acc. or Rel.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evoprune.harness.common.outputs import write_figure
from evoprune.harness.common.text_tables import markdown_table, tex_escape
from evoprune.harness.results.paper import METHOD_LABELS, aggregate, load_paper_table
from evoprune.harness.results.resume import read_complete
from evoprune.harness.results.video_metrics import in_derived

MISSING, NOT_SCORED, NO_SAMPLES = "—", "n/s", "n/a"
NOT_IN_PAPER = "(not in the paper)"  # marks the label of a row the paper's table does not have
LATENCY = {"pre-LLM": "pre_llm", "LLM": "llm", "Overall": "total"}  # paper column → latency.json key
ID_COLUMNS = ("method", "label", "budget")
AGGREGATES = ("Acc.", "Rel.")
STAGE_NOTE = (
    "Relative latency = median per-sample stage time ÷ Native's, same machine and sweep, batch size 1: "
    "pre-LLM = vision encoder (incl. in-encoder merging) + other (projector, pooling, newlines) "
    "+ post-encoder pruning; "
    "LLM = prefill + greedy decode (DART's in-LLM pruning is in prefill); "
    "Overall = the whole sample, preprocessing (and video decoding) included."
)


@dataclass
class Row:
    """One table row: a cell's values by paper column, with what is known about the run."""

    method: str
    budget: int | None
    label: str
    values: dict[str, object] = field(default_factory=dict)  # float, MISSING, NOT_SCORED or NO_SAMPLES
    agreement: dict[str, float | None] = field(default_factory=dict)  # paper column (or "all") → share
    run: Path | None = None
    config: dict | None = None


def normalise_answer(text: str | None) -> str:
    """Lower case, whitespace collapsed, surrounding punctuation and spaces stripped."""
    return re.sub(r"\s+", " ", (text or "").lower()).strip(" \t.,;:!?\"'")


def _read_samples(run: Path) -> dict[tuple[str, int], dict]:
    with open(run / "samples.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return {(row["task"], int(row["doc_id"])): row for row in rows}


def _score(metrics: dict, spec) -> object:
    if "derived" in spec:
        entry = metrics.get("derived", {}).get(spec["derived"])
        if entry is None:  # no such tasks in the run
            return MISSING
        if entry["value"] is None:  # the run has none of the split's samples (e.g. under a small limit)
            return NO_SAMPLES
        return entry["value"] * spec["scale"]
    entry = metrics["tasks"].get(spec["task"])
    if entry is None:
        return MISSING
    value = entry["metrics"].get(spec["metric"])
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return NOT_SCORED
    return value * spec["scale"]


def agreement(ours: dict, native: dict, tasks: list[str]) -> float | None:
    """Share of the samples of ``tasks`` in both runs whose normalised answers are equal.

    A sample with an error in either run counts as disagreeing. None when no sample is shared.
    """
    return _agreement_over(ours, native, [key for key in ours if key[0] in tasks])


def _column_keys(spec, ours: dict) -> set:
    """Our sample keys a column is computed from: its task's, or those counting in its derived metric."""
    if "derived" in spec:
        return {key for key, row in ours.items() if in_derived(spec["derived"], row)}
    return {key for key in ours if key[0] == spec["task"]}


def _agreement_over(ours: dict, native: dict, keys) -> float | None:
    """`agreement` over the given sample keys of ``ours``."""
    keys = [key for key in keys if key in native]
    if not keys:
        return None
    same = sum(
        ours[k]["error"] is None
        and native[k]["error"] is None
        and normalise_answer(ours[k]["answer"]) == normalise_answer(native[k]["answer"])
        for k in keys
    )
    return same / len(keys)


def _budget(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def collect(cells: list[tuple[str, int | None, Path]], columns: dict, paper_table: str) -> list[Row]:
    """Rows of our values for each (method, budget, run folder), in the order of ``cells``."""
    paper = load_paper_table(paper_table)
    labels = {(r["method"], _budget(r["budget"])): r["label"] for r in paper.to_dict("records")}
    paper_columns = list(paper.columns)
    # A benchmark may map the columns of several tables (the video suite: Tables 2 and 3); only this one's count.
    columns = {column: spec for column, spec in columns.items() if column in paper_columns}
    rows, samples, latency = [], {}, {}
    for method, budget, run in cells:
        label = labels.get((method, budget)) or f"{METHOD_LABELS.get(method, method)} {NOT_IN_PAPER}"
        row = Row(method, budget, label, run=run)
        record, _ = read_complete(run)
        for column in paper_columns[len(ID_COLUMNS) :]:
            row.values[column] = MISSING
        if record is not None:
            row.config = record["config"]
            metrics = json.loads((run / "metrics.json").read_text())
            for column, spec in columns.items():
                row.values[column] = _score(metrics, spec)
            samples[method, budget] = _read_samples(run)
            latency[method, budget] = json.loads((run / "latency.json").read_text())
        rows.append(row)
    native = next((r for r in rows if r.method == "none"), None)
    native_key = ("none", None)
    for row in rows:
        key = (row.method, row.budget)
        if native is not None and key in latency and native_key in latency:
            ours, base = latency[key], latency[native_key]
            if all(ours["meta"].get(k) == base["meta"].get(k) for k in ("device", "dtype", "limit")):
                for column, stage in LATENCY.items():
                    if column in row.values and base["overall"].get(stage):
                        row.values[column] = ours["overall"][stage] / base["overall"][stage]
        scores = {c: v if isinstance(v, float | int) else None for c, v in row.values.items()}
        if row.config is not None:
            native_scores = None
            if native is not None and native.config:
                native_scores = {c: v if isinstance(v, float | int) else None for c, v in native.values.items()}
            result = aggregate(paper_table, scores, native_scores)
            row.values["Acc."] = MISSING if result.acc is None else result.acc
            row.values["Rel."] = MISSING if result.rel is None else result.rel
        if key in samples and native_key in samples and key != native_key:
            own, native_samples = samples[key], samples[native_key]
            column_keys = {column: _column_keys(spec, own) for column, spec in columns.items()}
            for column, keys in column_keys.items():
                row.agreement[column] = _agreement_over(own, native_samples, keys)
            row.agreement["all"] = _agreement_over(own, native_samples, set().union(*column_keys.values()))
    return rows


def paper_rows(paper_table: str) -> list[Row]:
    """The paper's rows as printed."""
    rows = []
    for record in load_paper_table(paper_table).to_dict("records"):
        values = {k: float(v) for k, v in record.items() if k not in ID_COLUMNS}
        rows.append(Row(record["method"], _budget(record["budget"]), record["label"], values=values))
    return rows


def difference(ours: list[Row], paper: list[Row]) -> list[Row]:
    """Ours − paper for our rows the paper has, cell by cell where both are numbers (MISSING otherwise)."""
    by_key = {(r.method, r.budget): r for r in paper}
    rows = []
    for row in ours:
        other = by_key.get((row.method, row.budget))
        if other is None:
            continue
        values = {}
        for column, value in row.values.items():
            theirs = other.values.get(column)
            numeric = isinstance(value, float | int) and isinstance(theirs, float | int)
            values[column] = value - theirs if numeric else MISSING
        rows.append(Row(row.method, row.budget, row.label, values=values))
    return rows


def format_value(column: str, value, signed: bool) -> str:
    if not isinstance(value, float | int):
        return str(value)
    sign = "+" if signed else ""
    if column in LATENCY:
        return f"{value:{sign}.2f}"
    if column == "MME":
        return f"{value:{sign}.0f}"
    return f"{value:{sign}.1f}"


def _sections(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Native first, then one section per budget in order of appearance (the paper's grouping)."""
    native = [r for r in rows if r.budget is None]
    budgets = list(dict.fromkeys(r.budget for r in rows if r.budget is not None))
    sections = [("Upper bound: all visual tokens", native)] if native else []
    return sections + [(f"Retain {b} tokens", [r for r in rows if r.budget == b]) for b in budgets]


def markdown(rows: list[Row], columns: list[str], signed: bool = False, agree: bool = False) -> str:
    """A Markdown table in the paper's layout (section rows for the budgets)."""
    header = ["Method", "Tokens", *columns] + (["Agree"] if agree else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for title, members in _sections(rows):
        lines.append(f"| *{title}* |" + " |" * (len(header) - 1))
        for row in members:
            cells = [row.label, "all" if row.budget is None else str(row.budget)]
            cells += [format_value(c, row.values.get(c, MISSING), signed) for c in columns]
            if agree:
                share = row.agreement.get("all")
                cells.append("—" if share is None else f"{100 * share:.1f}%")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement_markdown(rows: list[Row], columns: list[str]) -> str:
    """Agreement with Native per benchmark column and over all samples, in percent."""
    header = ["Method", "Tokens", *columns, "all"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in rows:
        if row.budget is None:
            continue
        cells = [row.label, str(row.budget)]
        for column in [*columns, "all"]:
            share = row.agreement.get(column)
            cells.append("—" if share is None else f"{100 * share:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ttft_medians(rows: list[Row]) -> dict[tuple, tuple[float | None, float | None]]:
    """(median TTFT, median model TTFT) in seconds of every complete run, by (method, budget)."""
    medians = {}
    for row in rows:
        if row.config is not None:
            overall = json.loads((row.run / "latency.json").read_text())["overall"]
            medians[row.method, row.budget] = (overall.get("ttft"), overall.get("model_ttft"))
    return medians


def ttft_markdown(rows: list[Row]) -> str:
    """Median TTFT and model TTFT (ms) of every complete run, and each one's speedup: Native's ÷ the run's (same
    machine and sweep; above 1 = faster).

    Model TTFT leaves out video decoding and preprocessing (CPU work no pruner changes)."""
    medians = ttft_medians(rows)
    native = medians.get(("none", None), (None, None))
    table = [["Method", "Tokens", "TTFT ms", "speedup", "model TTFT ms", "speedup"]]
    for row in rows:
        cells = [row.label, "all" if row.budget is None else str(row.budget)]
        for ours, base in zip(medians.get((row.method, row.budget), (None, None)), native, strict=True):
            cells.append(MISSING if ours is None else f"{1000 * ours:.1f}")
            cells.append(f"{base / ours:.2f}x" if ours and base else MISSING)
        table.append(cells)
    return markdown_table(table, left=2)


def latex(blocks: list[tuple[str, list[Row], bool]], columns: list[str]) -> str:
    """One booktabs tabular with a block per (title, rows, signed)."""
    width = 2 + len(columns)
    lines = [
        r"\begin{tabular}{ll" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(["Method", "Tokens", *(tex_escape(c) for c in columns)]) + r" \\",
    ]
    for title, rows, signed in blocks:
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\textbf{{{tex_escape(title)}}}}} \\"]
        for section, members in _sections(rows):
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{tex_escape(section)}}}}} \\")
            for row in members:
                cells = [tex_escape(row.label), "all" if row.budget is None else str(row.budget)]
                cells += [tex_escape(format_value(c, row.values.get(c, MISSING), signed)) for c in columns]
                lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def csv_frame(blocks: list[tuple[str, list[Row], bool]], columns: list[str]) -> pd.DataFrame:
    """All blocks stacked, one row per (block, method, budget); agreement columns for ours."""
    records = []
    for name, rows, _ in blocks:
        for row in rows:
            record = {"table": name, "method": row.method, "label": row.label, "budget": row.budget}
            record.update({c: row.values.get(c, MISSING) for c in columns})
            for column, share in row.agreement.items():
                record[f"agree {column}"] = share
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    if "budget" in frame:  # integers even beside Native's missing budget (not 64.0)
        frame["budget"] = frame["budget"].astype("Int64")
    return frame


def pareto_plot(ours: list[Row], paper: list[Row], path: Path, title: str) -> bool:
    """Acc. against speedup over Native (Native ÷ method; above 1 = faster), ours and the paper's side by side,
    one colour per method, Native a star. The speedup is 1 ÷ the Overall relative latency where the table has
    that column (Tables 1 and 2), else Native's median TTFT ÷ the run's (ours only: the paper reports no latency
    for Table 3; its panel is then left out).

    False (and no file) when none of our rows has both values yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_overall = any(isinstance(r.values.get("Overall"), float | int) for r in ours)
    medians = {} if by_overall else ttft_medians(ours)
    native_ttft = medians.get(("none", None), (None, None))[0]

    def speedup(row: Row, timed: bool) -> float | None:
        overall = row.values.get("Overall")
        if isinstance(overall, float | int) and overall > 0:
            return 1.0 / overall
        ttft = medians.get((row.method, row.budget), (None, None))[0] if timed else None
        return native_ttft / ttft if ttft and native_ttft else None

    def points(rows, timed: bool = False):
        scored = [row for row in rows if isinstance(row.values.get("Acc."), float | int)]
        return [(row, x) for row in scored if (x := speedup(row, timed))]

    if not points(ours, timed=True):
        return False
    panels = [(ours, "ours", True), (paper, "paper", False)] if points(paper) else [(ours, "ours", True)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.4), squeeze=False)
    methods = {row.method for rows, _, _ in panels for row in rows}
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")  # one colour per method
    colours = {}
    for ax, (rows, name, timed) in zip(axes[0], panels, strict=True):
        for row, x in points(rows, timed):
            colour = colours.setdefault(row.method, palette(len(colours) % palette.N))
            y = row.values["Acc."]
            native = row.budget is None
            ax.scatter(
                x,
                y,
                s=160 if native else 60,
                color=colour,
                marker="*" if native else "o",
                label=row.label,
                zorder=3 if native else 2,
                edgecolors="black" if native else "none",
            )
            tag = "all" if row.budget is None else str(row.budget)
            ax.annotate(tag, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
        ax.set_title(name, fontsize=10)
        latency = "Overall latency" if by_overall else "TTFT"
        ax.set_xlabel(f"speedup: Native's {latency} ÷ the method's\n(above 1 = faster)", fontsize=9)
        ax.set_ylabel("Acc. (the paper's average)")
        ax.grid(alpha=0.3)
        ax.margins(0.12)
    fig.suptitle(f"{title} (point labels: tokens kept)", fontsize=11)
    write_figure(fig, path, dpi=110, bbox_inches="tight")
    return True
