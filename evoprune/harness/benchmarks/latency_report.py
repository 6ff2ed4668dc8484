"""The latency benchmark's files: the CSV (read back for a redraw), the Markdown and LaTeX tables, the
stacked-bar figure, their names, and the notes saying how each row was measured."""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

from evoprune.harness.benchmarks.latency_models import ModelSpec
from evoprune.harness.benchmarks.latency_runs import SPEEDUPS
from evoprune.harness.common.outputs import write_figure, write_text
from evoprune.harness.common.text_tables import latex_table, markdown_table
from evoprune.harness.results.paper import METHOD_LABELS as LABELS


def _layers(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def measurement_note(frames: int, vision_frames: int, llm_layers: int, total: int, dart_layer: int) -> str:
    """How the rows at ``frames`` frames were obtained (scaling stated)."""
    parts = []
    if vision_frames < frames:
        parts.append(
            f"vision side measured on {vision_frames} of {frames} frames, encoder and other (projector, pooling, "
            f"layout) scaled x{frames / vision_frames:g}; preprocess, pruning and the LLM prefill measured at "
            f"{frames} frames on the measured frames' tokens tiled"
        )
    if llm_layers == total:
        parts.append(f"LLM: all {total} decoder layers measured")
    else:
        parts.append(
            f"LLM: {llm_layers} of {total} full-width decoder layers measured (DART: {_layers(0, dart_layer - 1)} on "
            f"the full prompt, {_layers(dart_layer, dart_layer)} on the pruned one), the rest extrapolated from the "
            f"measured layers at the final sequence length"
        )
    return "; ".join(parts)


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict]:
    """A written CSV's rows with numbers parsed back (files from before the runtime column: eager)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.setdefault("runtime", "eager")
        for key, value in row.items():
            if key not in ("method", "measurement", "machine", "shapes", "runtime"):
                number = float(value)
                row[key] = int(number) if number.is_integer() and not key.endswith(("_ms", "_gflops")) else number
    return rows


def figure_title(spec: ModelSpec, rows: list[dict]) -> tuple[str, str]:
    """The figure's heading and caption from the rows alone (what `--render` has): the heading names the model,
    shapes, machine and runtimes; the caption says what the labels are and how the times were measured."""
    last = rows[-1]
    shapes = "tiny test shapes" if last.get("shapes") == "tiny" else "real shapes"
    head = (
        f"TTFT per stage: {spec.label}, {shapes}, random weights, {last['machine'].split(';')[0]}, "
        f"runtime {' and '.join(runtime_runs(rows))}"
    )
    caption = (
        "Bar labels: speedup = Native's time ÷ the method's (above 1 = faster). "
        f"Median of {last['repeats']} interleaved round(s) after {last.get('warmup', 0)} warm-up. "
        f"{last['frames']} frame{'s' if int(last['frames']) > 1 else ''}: {last['measurement']}."
    )
    return head, caption


TABLE_MS = ("preprocess", "vision_encoder", "pruning", "other", "prefill", "pre_llm", "ttft")
TABLE_HEAD = ["method", "runtime", "frames", "budget", "LLM tokens", "preprocess", "encoder", "pruning", "other"]
TABLE_HEAD += ["prefill", "pre-LLM", "TTFT", "pre-LLM speedup (pred.)", "prefill speedup (pred.)"]
TABLE_HEAD += ["TTFT speedup (pred.)"]


def budget_cell(row: dict) -> str:
    return "all" if row["method"] == "none" else str(row["budget"])


def table_cells(row: dict) -> list[str]:
    cells = [LABELS[row["method"]], row["runtime"], str(row["frames"]), budget_cell(row), str(row["llm_tokens"])]
    cells += [f"{row[f'{name}_ms']:.1f}" for name in TABLE_MS]
    return cells + [f"{row[f'speedup_{n}']:.2f}x ({row[f'predicted_{n}']:.2f}x)" for n in SPEEDUPS]


def runtime_runs(rows: list[dict]) -> list[str]:
    """The runtimes the rows hold, in order."""
    return list(dict.fromkeys(row["runtime"] for row in rows))


def runtimes_table(rows: list[dict]) -> list[list[str]]:
    """Header and one row per method, frame count and budget with each runtime's encoder and TTFT (ms) and
    TTFT speedup over its own native side by side, the FLOP prediction, and the first runtime's TTFT ÷ each
    other's (what compiling gains)."""
    names = runtime_runs(rows)
    head = ["method", "frames", "budget", *(f"encoder {n}" for n in names), *(f"TTFT {n}" for n in names)]
    head += [*(f"TTFT speedup {n}" for n in names), "TTFT speedup (pred.)"]
    head += [f"{names[0]} / {n} TTFT" for n in names[1:]]
    table = [head]
    for start in range(0, len(rows), len(names)):
        side = rows[start : start + len(names)]
        cells = [LABELS[side[0]["method"]], str(side[0]["frames"]), budget_cell(side[0])]
        cells += [f"{row['vision_encoder_ms']:.1f}" for row in side] + [f"{row['ttft_ms']:.1f}" for row in side]
        cells += [f"{row['speedup_ttft']:.2f}x" for row in side] + [f"{side[0]['predicted_ttft']:.2f}x"]
        table.append(cells + [f"{side[0]['ttft_ms'] / row['ttft_ms']:.2f}x" for row in side[1:]])
    return table


def markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    parts = [f"# {title}", "", markdown_table([TABLE_HEAD, *map(table_cells, rows)], left=3), ""]
    if len(runtime_runs(rows)) > 1:
        parts += ["## Runtimes side by side (ms)", "", markdown_table(runtimes_table(rows), left=1), ""]
    return "\n".join(parts + [f"- {note}" for note in notes]) + "\n"


def latex(rows: list[dict], title: str) -> str:
    tables = [latex_table([TABLE_HEAD, *map(table_cells, rows)], left=3)]
    if len(runtime_runs(rows)) > 1:
        tables.append(latex_table(runtimes_table(rows), left=1))
    return f"% {title}\n" + "\n".join(tables)


def render_figure(panels: list[tuple[str, list[dict]]], path: Path, title: tuple[str, str]) -> None:
    """One panel per (title, bars), native first: the model time (preprocess left out) stacked into
    visual encoder / other (projector, pooling, layout, post-encoder pruning) / LLM prefill, each bar
    labelled with its speedup (native's total ÷ its own); below, the same without the LLM (pre-LLM at its own
    scale). ``title``: the heading and the caption (`figure_title`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = len(panels) * max(4.0, 0.45 * max(len(bars) for _, bars in panels))
    fig, axes = plt.subplots(2, len(panels), figsize=(width, 7.4), squeeze=False, height_ratios=(3, 2))
    heading, caption = title
    caption = textwrap.fill(caption, int(width * 16))
    colours = ("#4C72B0", "#DD8452", "#55A868")
    for column, (panel_title, bars) in enumerate(panels):
        x = np.arange(len(bars))
        for top, ax in enumerate(axes[:, column]):
            encoder = np.array([row["vision_encoder_ms"] for row in bars])
            other = np.array([row["other_ms"] + row["pruning_ms"] for row in bars])
            prefill = np.array([row["prefill_ms"] for row in bars]) if top == 0 else np.zeros(len(bars))
            totals = encoder + other + prefill
            scale, unit = (1e-3, "s") if totals[0] >= 2000 else (1.0, "ms")
            ax.bar(x, encoder * scale, color=colours[0], label="visual encoder")
            ax.bar(
                x, other * scale, bottom=encoder * scale, color=colours[1], label="other (projector, pooling, pruning)"
            )
            if top == 0:
                ax.bar(x, prefill * scale, bottom=(encoder + other) * scale, color=colours[2], label="LLM prefill")
            for i, total in enumerate(totals):
                ax.annotate(
                    f"{totals[0] / total:.2f}x",
                    (i, total * scale),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
            ax.set_xticks(x, [LABELS[row["method"]] for row in bars] if top else [], rotation=35, ha="right")
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            ax.margins(y=0.08)
            ax.set_ylabel(f"TTFT w/o preprocess ({unit})" if top == 0 else f"pre-LLM ({unit})")
        axes[0][column].set_title(panel_title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    lines = caption.count("\n") + 1
    bottom = 0.05 + 0.022 * lines
    fig.legend(
        handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, bottom - 0.045)
    )
    fig.text(0.01, 0.005, caption, fontsize=7.5, ha="left", va="bottom")
    fig.suptitle(heading, fontsize=11, x=0.01, ha="left", y=0.99)
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    write_figure(fig, path, dpi=150)


def figure_panels(spec: ModelSpec, rows: list[dict], figure_budget: int) -> list[tuple[str, list[dict]]]:
    """LLaVA-1.5: one panel per budget; LLaVA-Video: one panel per frame count at ``figure_budget``; with
    several runtimes, one panel per runtime beside each other (bars relative to that runtime's native)."""
    names = runtime_runs(rows)
    panels = []
    for panel_title, wanted in _panel_selectors(spec, rows, figure_budget):
        for name in names:
            bars = [r for r in rows if r["runtime"] == name and wanted(r)]
            panels.append((panel_title if len(names) == 1 else f"{panel_title}, {name}", bars))
    return panels


def _panel_selectors(spec: ModelSpec, rows: list[dict], figure_budget: int) -> list[tuple[str, object]]:
    """(title, which rows it draws: native first in row order) per panel."""
    if not spec.is_video:
        budgets = sorted({row["budget"] for row in rows if row["method"] != "none"}, reverse=True)
        return [(f"{b} visual tokens", lambda r, b=b: r["method"] == "none" or r["budget"] == b) for b in budgets]
    frame_counts = dict.fromkeys(row["frames"] for row in rows)
    return [
        (
            f"{frames} frame{'s' if frames > 1 else ''}, {figure_budget} tokens/frame",
            lambda r, f=frames: r["frames"] == f and (r["method"] == "none" or r["budget"] == figure_budget),
        )
        for frames in frame_counts
    ]


def output_stem(spec: ModelSpec, device: str, shapes: str, runtimes: list[str]) -> str:
    """The files' name: a measurement holding the eager runtime (alone or beside the compiled) has none
    of its own, the compiled runtime alone ends in ``_compiled``."""
    video = "_video" if spec.is_video else ""
    compiled = "" if "eager" in runtimes else "".join(f"_{name}" for name in runtimes)
    return f"bench_latency{video}_{device}{'_tiny' if shapes == 'tiny' else ''}{compiled}"


def figure_path(spec: ModelSpec, out: Path, stem: str) -> Path:
    suffix = stem.split("_", 3 if spec.is_video else 2)[-1]
    return out / "figures" / (f"fig1_{suffix}.png" if spec.is_video else f"fig3_ttft_{suffix}.png")
