"""Render the paper's Figure 4: EvoPrune's layer schedules, accuracy and encoder time against the budget.

    python scripts/render_fig4.py +experiment=fig4 [limit=N] [output_dir=...]

Takes the same overrides as the sweep (`python run.py -m +experiment=fig4 ...`), so it finds the same
run folders. Per schedule and budget (tokens per frame): MVBench (test), LongVideoBench (val) and
Video-MME accuracy from each run's per-sample ``derived`` scores, and the encoder time (median seconds
per sample of the ``vision_encoder`` stage, all frames, merging included). The paper's figure plots
encoding time per benchmark; the runs' median over all samples is plotted once instead. The paper's
values that its Appendix A text states (results/paper/appendix_a.csv) are drawn as crosses. Each
schedule's per-layer merge counts (`evoprune.merge_schedule`, the counts `evoprune.patch` uses on the
model's 26 SigLIP layers) are drawn for every budget. Writes results/tables/<experiment>.{md,csv} and
results/figures/<experiment>.png; missing runs show as "—", never as 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_figure, write_text
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.evaluation.sweep import experiment_jobs
from evoprune.harness.reports.names import output_name
from evoprune.harness.results.paper import PAPER_DIR
from evoprune.harness.results.resume import RUN_RECORD
from evoprune.harness.results.run_folder import run_dir
from evoprune.harness.results.tables import MISSING
from evoprune.schedules import merge_schedule

# Figure 4's panels: benchmark label -> the derived score that fills it.
BENCHMARKS = {"MVBench": "mvbench_test", "LongVideoBench": "longvideobench_val", "Video-MME": "videomme_overall"}
# appendix_a.csv's benchmark names -> ours.
PAPER_BENCHMARKS = {"MVBench": "MVBench", "LongVideoBench": "LongVideoBench", "Video-MME": "Video-MME"}
STRATEGY_LABELS = {
    "mean": "Mean",
    "skip": "Skip",
    "first": "First",
    "last": "Last",
    "increasing": "Increasing",
    "decreasing": "Decreasing",
}


def read_run(folder: Path) -> dict | None:
    """Scores and encoder time of a complete run folder; None when the run is missing or unfinished."""
    if not (folder / RUN_RECORD).exists():
        return None
    derived = json.loads((folder / "metrics.json").read_text()).get("derived", {})
    latency = json.loads((folder / "latency.json").read_text())["overall"]
    row = {label: (derived.get(name) or {}).get("value") for label, name in BENCHMARKS.items()}
    row["encoder_s"] = latency.get("vision_encoder")
    return row


def collect(jobs) -> pd.DataFrame:
    """One row per (schedule, budget) cell with its scores, encoder time and run folder."""
    rows = []
    for job in jobs:
        if job.pruner.method != "evoprune" or job.budget is None:
            raise ConfigError(f"Figure 4 plots EvoPrune schedules at a budget; cell {job.pruner.name} is not one")
        folder = run_dir(job)
        result = read_run(folder) or {label: None for label in [*BENCHMARKS, "encoder_s"]}
        rows.append({"schedule": job.pruner.schedule, "budget": int(job.budget), **result, "run": str(folder)})
    return pd.DataFrame(rows)


def schedules(jobs, layers: int, tokens: int) -> dict[tuple[str, int], list[int]]:
    """Per-layer merge counts of every cell, as `evoprune.patch` computes them (n = half the layers)."""
    counts = {}
    for job in jobs:
        options = job.pruner
        n = options.n if options.n is not None else max(1, layers // 2)
        counts[(options.schedule, int(job.budget))] = merge_schedule(
            options.schedule, tokens, int(job.budget), layers, n=n, alpha=options.alpha
        )
    return counts


def paper_points() -> pd.DataFrame:
    """The Figure 4 values the paper's text states (strategy, budget, benchmark, metric, value)."""
    table = pd.read_csv(PAPER_DIR / "appendix_a.csv")
    points = table[(table.kind == "result") & table.budget.notna() & table.metric.isin(["accuracy", "encode_time_s"])]
    return points[~points.strategy.str.contains("|", regex=False)]


def markdown(frame: pd.DataFrame) -> str:
    columns = ["schedule", "budget", *BENCHMARKS, "encoder_s"]
    lines = ["| " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * (len(columns) - 2)]
    for record in frame.to_dict("records"):
        cells = [STRATEGY_LABELS.get(record["schedule"], record["schedule"]), str(record["budget"])]
        cells += [MISSING if pd.isna(record[c]) else f"{record[c]:.1f}" for c in BENCHMARKS]
        cells.append(MISSING if pd.isna(record["encoder_s"]) else f"{record['encoder_s']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, counts: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(frame.budget.unique())
    figure, axes = plt.subplots(2, 4, figsize=(18, 8))
    paper = paper_points()
    colours = dict(zip(STRATEGY_LABELS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for schedule, rows in frame.groupby("schedule", sort=False):
        rows = rows.sort_values("budget")
        label, colour = STRATEGY_LABELS.get(schedule, schedule), colours.get(schedule)
        for ax, benchmark in zip(axes[0, :3], BENCHMARKS, strict=True):
            ax.plot(rows.budget, rows[benchmark], marker="o", color=colour, label=label)
        axes[0, 3].plot(rows.budget, rows.encoder_s, marker="o", color=colour, label=label)
    for ax, benchmark in zip(axes[0, :3], BENCHMARKS, strict=True):
        stated = paper[(paper.benchmark == PAPER_BENCHMARKS[benchmark]) & (paper.metric == "accuracy")]
        for point in stated.itertuples():
            ax.scatter(point.budget, point.value, marker="x", color=colours.get(point.strategy.lower()), s=60)
        ax.set(title=f"{benchmark} (x: paper, as stated)", xlabel="tokens per frame", ylabel="accuracy (%)")
        ax.set_xticks(budgets)
    axes[0, 3].set(title="encoder time (ours: all samples)", xlabel="tokens per frame", ylabel="s per sample")
    axes[0, 3].set_xticks(budgets)
    axes[0, 0].legend(fontsize=8)
    for ax, budget in zip(axes[1], (*budgets, None)[:4], strict=False):
        if budget is None:
            ax.axis("off")
            continue
        for schedule in STRATEGY_LABELS:
            if (schedule, budget) in counts:
                per_layer = counts[(schedule, budget)]
                ax.step(range(len(per_layer)), per_layer, where="mid", color=colours.get(schedule))
        ax.set(title=f"merges per layer, budget {budget}", xlabel="encoder layer", ylabel="tokens merged")
    figure.suptitle(title)
    figure.tight_layout()
    write_figure(figure, path, dpi=110)


def render(overrides: list[str], tables_dir: Path, figures_dir: Path) -> Path:
    cfg, jobs = experiment_jobs(str(CONFIG_DIR), overrides)
    if cfg.model.architecture != "llava_onevision":
        raise ConfigError(f"Figure 4 is on LLaVA-Video; model={cfg.model.name} is {cfg.model.architecture}")
    vision = cfg.model.get("vision") or cfg.model.tiny.vision
    frame = collect(jobs)
    counts = schedules(jobs, vision.num_layers, cfg.model.encoder_tokens)
    name = output_name(cfg)
    complete = int(frame.encoder_s.notna().sum())
    notes = [
        f"Ours: model={cfg.model.name}, benchmark={cfg.benchmark.name}, limit={cfg.limit}; "
        f"{complete} of {len(frame)} runs complete.",
        "Accuracy: per-sample derived scores (MVBench test, LongVideoBench val, Video-MME w/o sub); encoder time: "
        "median seconds per sample of the vision_encoder stage over all samples of the run.",
        "Merge counts: evoprune.merge_schedule on the tower's 26 layers (features from the last), n = 13 for "
        "first/last, alpha = 1 for increasing/decreasing, as the paper's Figure 4 caption sets them.",
    ]
    md = "\n\n".join([f"# Figure 4: {name}", markdown(frame), "## Notes", "\n".join(f"- {n}" for n in notes)])
    tables_dir.mkdir(parents=True, exist_ok=True)
    write_text(tables_dir / f"{name}.md", md + "\n")
    write_text(tables_dir / f"{name}.csv", frame.to_csv(index=False, na_rep=MISSING))
    plot(frame, counts, figures_dir / f"{name}.png", f"Figure 4: {name}")
    print(md)
    print(f"\nwritten: {tables_dir / name}.{{md,csv}}, {figures_dir / f'{name}.png'}")
    return figures_dir / f"{name}.png"
