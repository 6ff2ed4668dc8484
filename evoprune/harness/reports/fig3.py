"""Render the paper's Figure 3: Time-To-First-Token per stage on Video-MME, Native and six methods.

    python scripts/render_fig3.py +experiment=fig3 [limit=N] [output_dir=...]

Takes the same overrides as the sweep (`python run.py -m +experiment=fig3 ...`), so it finds the same
run folders (Table 2's Native and 64-per-frame folders: the cells have the same names).

Segments, one stacked bar per method (median milliseconds per sample of the run's stages): Visual
Encoder = ``vision_encoder`` (EvoPrune's in-encoder merging included); Other = ``other`` (projector,
pooling, newline layout) + ``pruning`` (post-encoder selection is intermediate work between encoder and
LLM, as the paper's "intermediate modules"); LLM Backbone = ``prefill`` (DART's in-LLM selection
included). TTFT drawn = the sum of the three. ``preprocess`` (CPU video decoding and resizing; no method
changes it) is not in the bars: it is a column of its own in the table.

Sources, never mixed in one figure (ratios across devices mean nothing): if Native's run is complete,
every bar comes from the runs' ``latency.json`` ``per_task[experiment.task]`` (a method without a
complete run shows "—" and no bar); otherwise every bar comes from scripts/bench_latency.py's CSV
(``experiment.bench_csv``; null = results/bench_latency_video_cuda.csv if it exists, else
results/bench_latency_video_cpu.csv), the rows with the model's ``video.frames`` and the cell's budget
(Native: the model's ``num_visual_tokens``). Neither: exit 2, naming both ways to get Native's times.

Runtimes: the config's ``runtime`` (run folders ``...-compiled/`` for compiled) must have Native in the
source; the other runtime is drawn beside it, from the same source, when Native has it there too (its
complete runs, or the CSV's rows of that runtime: `bench_latency.py --runtime eager compiled`). Each bar's
speedup is over Native of its own runtime.

Budget: the paper does not state Figure 3's; the experiment config uses 64 tokens per frame, where
Table 2's relative latencies come closest to the §4.3 text (see configs/experiment/fig3.yaml). The
text's stated speedups are listed beside ours. Writes results/tables/<experiment>.{md,csv,tex} and
results/figures/<experiment>.png; missing values show as "—", never as 0.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_figure, write_text
from evoprune.harness.common.paths import CONFIG_DIR, REPO_ROOT, RESULTS_DIR
from evoprune.harness.common.text_tables import latex_table, markdown_table
from evoprune.harness.evaluation.sweep import experiment_jobs
from evoprune.harness.inference.runtime import RUNTIMES
from evoprune.harness.reports.names import output_name
from evoprune.harness.results.paper import METHOD_LABELS as LABELS
from evoprune.harness.results.resume import RUN_RECORD
from evoprune.harness.results.run_folder import run_dir
from evoprune.harness.results.tables import MISSING

BASELINES = ("fastervlm", "vispruner", "dart", "divprune", "cdpruner")
# The stages Figure 3 reads (latency.json keys; the benchmark CSV's columns add "_ms").
STAGES_READ = ("preprocess", "vision_encoder", "other", "pruning", "prefill")
# Figure 3's segments: label -> (column in our table, the stages summed into it).
SEGMENTS = {
    "Visual Encoder": ("encoder_ms", ("vision_encoder",)),
    "Other": ("other_ms", ("other", "pruning")),
    "LLM Backbone": ("llm_ms", ("prefill",)),
}
TIMES = [*(column for column, _ in SEGMENTS.values()), "ttft_ms", "preprocess_ms"]
SPEEDUPS = {"encoder_ms": "encoder_x", "other_ms": "other_x", "llm_ms": "llm_x", "ttft_ms": "ttft_x"}
BENCH_COLUMNS = ("frames", "method", "budget", *(f"{stage}_ms" for stage in STAGES_READ), "measurement")
# The speedups over Native the paper's §4.3 text states (its figure's bars are not transcribed):
# (who, our speedup column, as stated).
PAPER_STATED = [
    ("evoprune", "encoder_x", "1.8x"),
    ("evoprune", "other_x", "5x"),
    ("evoprune", "llm_x", "~2x"),
    ("evoprune", "ttft_x", "2x"),
    ("baselines", "encoder_x", "~1x (encoder 'largely unoptimized')"),
    ("baselines", "ttft_x", "1.3x-1.4x"),
]
STAGE_NAMES = {"encoder_x": "Visual Encoder", "other_x": "Other", "llm_x": "LLM Backbone", "ttft_x": "TTFT"}
PAPER_SOURCE = "arXiv 2603.03681 §4.3 text (NVIDIA H20, budget not stated)"


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (rendered files are committed)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def segments(stage_ms: dict) -> dict[str, float]:
    """Figure 3's segments, TTFT and preprocess (ms) from per-stage milliseconds."""
    row = {column: sum(stage_ms[stage] for stage in stages) for column, stages in SEGMENTS.values()}
    row["ttft_ms"] = sum(row[column] for column, _ in SEGMENTS.values())
    row["preprocess_ms"] = stage_ms["preprocess"]
    return row


def run_times(folder: Path, task: str) -> tuple[dict | None, str]:
    """(segments of ``task`` in a complete run folder, "") or (None, why there are none)."""
    if not (folder / RUN_RECORD).exists():
        return None, f"no complete run at {shown(folder)}"
    per_task = json.loads((folder / "latency.json").read_text())["per_task"]
    stages = per_task.get(task)
    if not stages or not stages.get("samples"):
        return None, f"the run at {shown(folder)} has no timed samples of {task} (tasks: {sorted(per_task)})"
    row = segments({stage: stages[stage] * 1000 for stage in STAGES_READ})
    row["preprocess_ms"] += stages.get("video_decode", 0.0) * 1000  # runs before the split have none
    return {**row, "samples": stages["samples"], "origin": shown(folder)}, ""


def bench_path(cfg) -> Path:
    """The latency benchmark's CSV: ``experiment.bench_csv``, else the CUDA one if it exists, else the CPU one."""
    chosen = cfg.experiment.get("bench_csv")
    if chosen is not None:
        path = Path(chosen)
        return path if path.is_absolute() else REPO_ROOT / path
    cuda = RESULTS_DIR / "bench_latency_video_cuda.csv"
    return cuda if cuda.exists() else RESULTS_DIR / "bench_latency_video_cpu.csv"


def read_bench(path: Path, frames: int, runtime: str) -> pd.DataFrame:
    """The CSV's rows of ``runtime`` measured at ``frames`` frames (empty when the file does not exist;
    a CSV without a runtime column holds eager rows)."""
    if not path.exists():
        return pd.DataFrame(columns=list(BENCH_COLUMNS))
    table = pd.read_csv(path)
    missing = [column for column in BENCH_COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {missing}; Figure 3 needs {list(BENCH_COLUMNS)}")
    runtimes = table.runtime if "runtime" in table.columns else pd.Series("eager", index=table.index)
    return table[(pd.to_numeric(table.frames) == frames) & (runtimes == runtime)]


def bench_times(table: pd.DataFrame, method: str, budget: int, path: Path) -> dict | None:
    """Segments of the CSV's one row for ``method`` at ``budget`` tokens per frame; None when it has none."""
    rows = table[(table.method == method) & (pd.to_numeric(table.budget) == budget)]
    if len(rows) > 1:
        raise ConfigError(f"{path} has {len(rows)} rows for method={method} budget={budget}; expected one")
    if rows.empty:
        return None
    row = rows.iloc[0]
    stage_ms = {stage: float(row[f"{stage}_ms"]) for stage in STAGES_READ}
    if any(pd.isna(value) for value in stage_ms.values()):
        return None
    return {**segments(stage_ms), "samples": None, "origin": shown(path), "measurement": row["measurement"]}


def cells(jobs, cfg) -> list[dict]:
    """Method, label, tokens per frame and run folder per runtime of every cell, in the experiment's order."""
    from omegaconf import OmegaConf

    listed = []
    for job in jobs:
        method = job.pruner.method
        if method not in LABELS:
            raise ConfigError(f"Figure 3 draws {sorted(LABELS)}; cell {job.pruner.name} is not one")
        tokens = cfg.model.num_visual_tokens if job.budget is None else int(job.budget)
        runs = {name: run_dir(OmegaConf.merge(job, {"runtime": name})) for name in RUNTIMES}
        listed.append({"method": method, "label": LABELS[method], "tokens": tokens, "runs": runs})
    native = [cell for cell in listed if cell["method"] == "none"]
    if len(native) != 1:
        raise ConfigError(f"Figure 3 needs exactly one Native cell (none-all); the experiment has {len(native)}")
    return listed


def missing_native_error(cfg, why: str, path: Path) -> ConfigError:
    """Neither source has Native: what is missing, and the two ways to get it."""
    native_row = f"method none, budget {cfg.model.num_visual_tokens}, frames {cfg.model.video.frames}"
    csv_state = f"{path} has no Native row ({native_row})" if path.exists() else f"{path} does not exist"
    tiny = " --shapes tiny" if cfg.model.kind == "tiny" else ""
    return ConfigError(
        f"Figure 3 needs Native's times: {why}, and {csv_state}. Either run the sweep with the model's weights "
        f"and datasets (make fig3), or measure with `python scripts/bench_latency.py --model llava_video{tiny}`, "
        f"which writes {path.name}"
    )


def collect(cfg, jobs) -> tuple[pd.DataFrame, str, str]:
    """One row per cell and runtime drawn (times in ms, None where missing; the config's runtime, then the
    other where the source has its Native), the source ("runs" or the CSV's path) and, for the CSV, why
    Native's run was not used."""
    task = cfg.experiment.task
    listed = cells(jobs, cfg)
    native = next(cell for cell in listed if cell["method"] == "none")
    native_times, why = run_times(native["runs"][cfg.runtime], task)
    order = [cfg.runtime, *(name for name in RUNTIMES if name != cfg.runtime)]
    if native_times is not None:
        source, why = "runs", ""
        by_runtime = {name: [run_times(cell["runs"][name], task)[0] for cell in listed] for name in order}
    else:
        path = bench_path(cfg)
        tables = {name: read_bench(path, cfg.model.video.frames, name) for name in order}
        by_runtime = {
            name: [bench_times(table, cell["method"], cell["tokens"], path) for cell in listed]
            for name, table in tables.items()
        }
        if by_runtime[cfg.runtime][listed.index(native)] is None:
            raise missing_native_error(cfg, why, path)
        source = shown(path)
    empty = dict.fromkeys([*TIMES, "samples", "origin", "measurement"])
    frames = []
    for name, times in by_runtime.items():
        if times[listed.index(native)] is None:
            continue  # the other runtime without Native in this source: not drawn
        rows = [
            {**cell, "cell": index, "run": cell["runs"][name], "runtime": name, "source": source}
            | empty
            | (found or {})
            for index, (cell, found) in enumerate(zip(listed, times, strict=True))
        ]
        frames.append(with_speedups(pd.DataFrame(rows).drop(columns="runs").astype({"samples": "Int64"})))
    # each cell's runtimes side by side, the config's first
    return pd.concat(frames).sort_values("cell", kind="stable").reset_index(drop=True), source, why


def with_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Native's time ÷ each method's, per segment and TTFT (None where a time is missing); one runtime's rows."""
    native = frame[frame.method == "none"].iloc[0]
    for column, speedup in SPEEDUPS.items():
        frame[speedup] = [native[column] / value if pd.notna(value) and value > 0 else None for value in frame[column]]
    return frame


def speedup_text(value) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.2f}x"


def ms_text(value) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.1f}"


def table_rows(frame: pd.DataFrame) -> list[list[str]]:
    """Header and one row per method: tokens, times (ms), preprocess, speedups over Native."""
    header = ["Method", "Runtime", "Tokens/frame", "Encoder ms", "Other ms", "LLM ms", "TTFT ms", "Preprocess ms"]
    header += [f"{STAGE_NAMES[s]} speedup" for s in SPEEDUPS.values()]
    rows = [header]
    for record in frame.to_dict("records"):
        cells = [record["label"], record["runtime"], str(record["tokens"]), *(ms_text(record[c]) for c in TIMES)]
        rows.append(cells + [speedup_text(record[s]) for s in SPEEDUPS.values()])
    return rows


def ours_stated(frame: pd.DataFrame, who: str, speedup: str) -> str:
    """Our speedup for EvoPrune, or its range over the baselines that have one (one runtime's rows)."""
    if who == "evoprune":
        values = frame.loc[frame.method == "evoprune", speedup].dropna()
        return speedup_text(values.iloc[0]) if len(values) else MISSING
    values = frame.loc[frame.method.isin(BASELINES), speedup].dropna()
    if values.empty:
        return MISSING
    low, high = speedup_text(values.min()), speedup_text(values.max())
    return f"{low if low == high else f'{low}-{high}'} ({len(values)} of {len(BASELINES)})"


def comparison_rows(frame: pd.DataFrame) -> list[list[str]]:
    """Header and one row per speedup the paper's text states: who, stage, paper, ours per runtime drawn."""
    runtimes = list(dict.fromkeys(frame.runtime))
    rows = [["Method", "Stage", "Paper (§4.3 text)", *(f"Ours ({name})" for name in runtimes)]]
    for who, speedup, stated in PAPER_STATED:
        name = "EvoPrune" if who == "evoprune" else "Baselines (FasterVLM, VisPruner, DART, DivPrune, CDPruner)"
        ours = [ours_stated(frame[frame.runtime == runtime], who, speedup) for runtime in runtimes]
        rows.append([name, STAGE_NAMES[speedup], stated, *ours])
    return rows


def csv_frame(frame: pd.DataFrame, comparison: list[list[str]]) -> pd.DataFrame:
    """Our rows (missing values "—"), then the paper-vs-ours block; a blank cell = not a column of that block."""
    columns = ["method", "label", "runtime", "tokens", "source", *TIMES, *SPEEDUPS.values(), "samples", "origin"]
    ours = frame[columns].astype(object).where(frame[columns].notna(), MISSING)
    ours_columns = [f"ours {name}" for name in dict.fromkeys(frame.runtime)]
    stated = pd.DataFrame(comparison[1:], columns=["label", "stage", "paper", *ours_columns])
    return pd.concat([ours.assign(block="ours"), stated.assign(block="paper vs ours")], ignore_index=True)


def measurement(frame: pd.DataFrame) -> str:
    """The benchmark's measurement sentences of the rows drawn, each once."""
    return "; ".join(dict.fromkeys(frame.measurement.dropna()))


def title(cfg, frame: pd.DataFrame, source: str) -> str:
    """Which numbers the figure shows: the runs (model, limit, Native's samples) or the benchmark's measurement."""
    task = cfg.experiment.task
    if source == "runs":
        samples = int(frame.loc[frame.method == "none", "samples"].iloc[0])
        return f"runs: model={cfg.model.name}, limit={cfg.limit}, {samples} samples of {task}"
    frames = cfg.model.video.frames
    return f"scripts/bench_latency.py (random weights, {frames} frames, stand-in for {task}): {measurement(frame)}"


def plot(frame: pd.DataFrame, path: Path, heading: str, source_line: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = list(dict.fromkeys(frame.runtime))
    width = 0.8 / len(runtimes)  # one bar per runtime side by side at each cell, the later ones hatched
    positions = [
        row.cell + (runtimes.index(row.runtime) - (len(runtimes) - 1) / 2) * width for row in frame.itertuples()
    ]
    figure, ax = plt.subplots(figsize=(10 + 2 * (len(runtimes) - 1), 6))
    bottom = [0.0] * len(frame)
    native_ms = frame.loc[frame.method == "none", "ttft_ms"].max()
    scale, unit = (1e-3, "s") if native_ms >= 2000 else (1.0, "ms")
    hatches = ["//" if runtimes.index(name) else "" for name in frame.runtime]
    for (label, (column, _)), colour in zip(SEGMENTS.items(), ("C0", "C1", "C2"), strict=True):
        heights = [0.0 if pd.isna(v) else v * scale for v in frame[column]]
        ax.bar(positions, heights, width * 0.95, bottom=bottom, color=colour, label=label, hatch=hatches)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, top, speedup in zip(positions, bottom, frame.ttft_x, strict=True):
        label = speedup_text(speedup)
        ax.annotate(label, (x, top), ha="center", va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8)
    first = frame.drop_duplicates("cell")
    ax.set_xticks(list(first.cell), [f"{r.label}\n{r.tokens}/frame" for r in first.itertuples()])
    ax.set_ylabel(f"median {unit} per sample (TTFT without preprocess)")
    handles, labels = ax.get_legend_handles_labels()
    if len(runtimes) > 1:
        from matplotlib.patches import Patch

        handles += [Patch(facecolor="white", edgecolor="black", hatch="//" if i else "") for i in range(len(runtimes))]
        labels += [f"runtime {name}" for name in runtimes]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(labels), fontsize=8)
    caption = textwrap.fill(
        "Bar labels: TTFT speedup = Native's TTFT ÷ the method's, same runtime (above 1 = faster); — = no data. "
        f"Source: {source_line}",
        150,
    )
    figure.text(0.01, 0.01, caption, fontsize=7.5, ha="left", va="bottom")
    figure.suptitle(heading)
    figure.tight_layout(rect=(0, 0.04 + 0.025 * caption.count("\n"), 1, 1))
    write_figure(figure, path, dpi=110)


def notes(cfg, frame: pd.DataFrame, source: str, why: str) -> list[str]:
    budgets = ", ".join(dict.fromkeys(str(r.tokens) for r in frame.itertuples() if r.method != "none"))
    lines = [
        "Segments (median ms per sample): Visual Encoder = vision_encoder (EvoPrune's merging inside); Other = other "
        "(projector, pooling, newlines) + pruning (post-encoder selection); LLM Backbone = prefill (DART's "
        "selection inside). TTFT = their sum; preprocess (CPU video decoding and resizing, which no method "
        "changes) is not in the bars, its own column here. Speedup = Native's time ÷ the method's.",
        f"Budget: {budgets} tokens per frame (the paper does not state Figure 3's; configs/experiment/fig3.yaml "
        "says why 64: there Table 2's relative latencies match the §4.3 text best).",
        f"Paper: {PAPER_SOURCE}; the speedups its text states, the bars' values not transcribed.",
    ]
    missing = [f"{row.label} {row.runtime}" for row in frame[frame.ttft_ms.isna()].itertuples()]
    drawn = list(dict.fromkeys(frame.runtime))
    absent = [name for name in RUNTIMES if name not in drawn]
    lines.append(
        f"Runtime: {', '.join(drawn)}"
        + (" (hatched: the later ones)" if len(drawn) > 1 else "")
        + "; each speedup over Native of its own runtime."
        + (f" Not drawn: {', '.join(absent)} (no Native in this source)." if absent else "")
    )
    if source == "runs":
        per_runtime = [
            f"{name}: {int(rows.ttft_ms.notna().sum())} of {len(rows)} runs complete with timed samples, folders "
            f"under {shown(Path(rows.run.iloc[0]).parent)}"
            for name, rows in frame.groupby("runtime", sort=False)
        ]
        lines.insert(
            0,
            f"Source: runs (model={cfg.model.name}, benchmark={cfg.benchmark.name}, limit={cfg.limit}), "
            f"latency.json per_task[{cfg.experiment.task}]; {'; '.join(per_runtime)}.",
        )
    else:
        lines.insert(
            0,
            f"Source: {source}, rows at {cfg.model.video.frames} frames; no bar comes from runs ({why}). "
            f"Measurement: {measurement(frame)}",
        )
    if missing:
        lines.append(f"— (no bar): no data for {', '.join(missing)} from this source.")
    return lines


def render(overrides: list[str], tables_dir: Path, figures_dir: Path) -> Path:
    cfg, jobs = experiment_jobs(str(CONFIG_DIR), overrides)
    if cfg.model.get("video") is None:
        raise ConfigError(f"Figure 3 is on a video model; model={cfg.model.name} has no video settings")
    if cfg.experiment.get("task") not in cfg.benchmark.tasks:
        raise ConfigError(
            f"experiment.task={cfg.experiment.get('task')!r} is not a task of benchmark {cfg.benchmark.name} "
            f"(tasks: {list(cfg.benchmark.tasks)})"
        )
    frame, source, why = collect(cfg, jobs)
    # the config's runtime names the files, as for the tables (the eager ones are the paper's setting)
    name = output_name(cfg)
    heading = f"Figure 3: TTFT breakdown on {cfg.experiment.task} ({name})"
    ours, comparison = table_rows(frame), comparison_rows(frame)
    md = "\n\n".join(
        [
            f"# {heading}",
            markdown_table(ours),
            "## Speedups the paper's text states, beside ours",
            markdown_table(comparison),
            "## Notes",
            "\n".join(f"- {line}" for line in notes(cfg, frame, source, why)),
        ]
    )
    write_text(tables_dir / f"{name}.md", md + "\n")
    write_text(tables_dir / f"{name}.csv", csv_frame(frame, comparison).to_csv(index=False))
    write_text(tables_dir / f"{name}.tex", latex_table(ours) + "\n" + latex_table(comparison))
    figure = figures_dir / f"{name}.png"
    plot(frame, figure, heading, title(cfg, frame, source))
    print(md)
    print(f"\nwritten: {tables_dir / name}.{{md,csv,tex}}, {figure}")
    return figure
