"""Render an experiment's runs as the paper's table: ours, the paper's, ours − paper.

    python scripts/render_table.py +experiment=table1 [limit=N] [output_dir=...]

Takes the same overrides as the sweep (`python run.py -m +experiment=table1 ...`), so it finds
the same run folders. Writes results/tables/<experiment>.{md,csv,tex} and the accuracy–latency
Pareto plot results/figures/pareto_<experiment>.png; missing runs show as "—", never as 0.
"""

from __future__ import annotations

from pathlib import Path

from evoprune.harness.common.outputs import write_text
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.common.source import code_version
from evoprune.harness.evaluation.sweep import experiment_jobs
from evoprune.harness.reports.names import output_name
from evoprune.harness.results.paper import SPECS
from evoprune.harness.results.run_folder import run_dir
from evoprune.harness.results.tables import (
    ID_COLUMNS,
    MISSING,
    NO_SAMPLES,
    NOT_IN_PAPER,
    NOT_SCORED,
    STAGE_NOTE,
    agreement_markdown,
    collect,
    csv_frame,
    difference,
    latex,
    markdown,
    paper_rows,
    pareto_plot,
    ttft_markdown,
)

PAPER_SOURCE = "arXiv 2603.03681, NVIDIA H20, as printed"


def formula_note(table: str) -> str:
    spec = SPECS[table]
    terms = " + ".join(c if s == 1 else f"{c}/{1 / s:g}" if s < 1 else f"{c}×{s:g}" for c, s in spec.scales.items())
    return (
        f"Acc. = ({terms}) / {spec.divisor:g}, the paper's own formula (worked out from its rows; see "
        "evoprune/harness/results/paper.py for the cells it does not reproduce exactly); Rel. = 100 × Acc. / "
        "Native's Acc. "
        "A column that is — or n/s is left out of both, the divisor shrinking in proportion."
    )


def notes(cfg, jobs, ours, columns) -> list[str]:
    complete = [row for row in ours if row.config is not None]
    native = next((row for row in ours if row.method == "none" and row.config is not None), None)
    lines = [
        f"Ours: model={cfg.model.name}, benchmark={cfg.benchmark.name} ({', '.join(cfg.benchmark.tasks)}), "
        f"limit={cfg.limit}, runtime={cfg.runtime}; {len(complete)} of {len(jobs)} runs complete; "
        f"code version {code_version()}; "
        f"run folders under {run_dir(jobs[0]).parent}.",
        f"Paper: {PAPER_SOURCE}.",
        STAGE_NOTE,
        formula_note(cfg.experiment.paper_table),
        "Agree = share of samples whose normalised answer (lower case, spaces collapsed, outer punctuation "
        "stripped) equals Native's answer to the same sample; a sample error in either run counts as a "
        "disagreement. It needs no labels and no judge.",
    ]
    unmapped = [c for c in columns if c not in cfg.benchmark.columns and c not in ("pre-LLM", "LLM", "Overall")]
    unmapped = [c for c in unmapped if c not in ("Acc.", "Rel.")]
    if unmapped:
        lines.append(f"— in {', '.join(unmapped)}: benchmark {cfg.benchmark.name} has no task for that column.")
    if any(row.config is None for row in ours):
        missing = [row.run.name for row in ours if row.config is None]
        lines.append(f"— for a whole row: no complete run yet ({', '.join(missing)}).")
    if any(value == NOT_SCORED for row in ours for value in row.values.values()):
        lines.append(
            f"{NOT_SCORED} = run but not scored (MM-Vet needs an LLM judge: set judge.api_key / OPENAI_API_KEY; "
            "or lmms-eval returned NaN, e.g. MME pairs split by a small limit); left out of Acc. and Rel."
        )
    if any(value == NO_SAMPLES for row in ours for value in row.values.values()):
        lines.append(
            f"{NO_SAMPLES} = the run holds no sample of that split (e.g. Video-MME long under a small limit); "
            "left out of Acc. and Rel."
        )
    if any(NOT_IN_PAPER in row.label for row in ours):
        lines.append(
            f"{NOT_IN_PAPER}: baselines the paper does not report, in this harness only (ToMe, VisionZip, "
            "spatial pooling, random; baselines/*.py state their deviations from the official code). Pooling "
            "keeps the square grid nearest the budget (e.g. 36 for 32, 196 for 192). No paper value exists to "
            "subtract, so they are absent from Ours − paper."
        )
    if native is None:
        lines.append("No complete Native run: relative latency, Rel. and Agree cannot be computed (—).")
    elif native.values.get("Acc.") == 0:
        lines.append("Rel. is — throughout: Native's Acc. is 0 (no ratio to it).")
    for row in ours:
        pruner = (row.config or {}).get("pruner", {})
        if row.method == "dart" and "pivot_order" in pruner:
            lines.append(
                f"DART {row.budget}: pivot_order={pruner['pivot_order']}, count={pruner.get('count')} "
                f"(exact keeps the budget; official keeps 4 + 8·⌊budget/8⌋)."
            )
    return lines


def render(overrides: list[str], tables_dir: Path, figures_dir: Path) -> Path:
    cfg, jobs = experiment_jobs(str(CONFIG_DIR), overrides)
    paper_table = cfg.experiment.paper_table
    compiled = cfg.runtime != "eager"  # its own files: the eager table is the paper's setting
    name = output_name(cfg)
    cells = [(job.pruner.name, job.budget, run_dir(job)) for job in jobs]
    ours = collect(cells, dict(cfg.benchmark.columns), paper_table)
    paper = paper_rows(paper_table)
    diff = difference(ours, paper)
    columns = [c for c in paper_rows(paper_table)[0].values if c not in ID_COLUMNS]
    benchmark_columns = [c for c in columns if c in cfg.benchmark.columns]
    title = f"{paper_table.replace('table', 'Table ')}: {cfg.experiment.name}"
    title += f" (runtime={cfg.runtime})" if compiled else ""
    footnotes = notes(cfg, jobs, ours, columns)
    md = "\n\n".join(
        [
            f"# {title}",
            "## Ours",
            markdown(ours, columns, agree=True),
            f"## Paper ({PAPER_SOURCE})",
            markdown(paper, columns),
            "## Ours − paper",
            markdown(diff, columns, signed=True),
            "## Agreement with Native, per benchmark (%)",
            agreement_markdown(ours, benchmark_columns),
            "## Time to first token (median per sample; model TTFT = without video decoding and preprocessing)",
            ttft_markdown(ours),
            "## Notes",
            "\n".join(f"- {line}" for line in footnotes),
        ]
    )
    blocks = [("ours", ours, False), ("paper", paper, False), ("ours − paper", diff, True)]
    tables_dir.mkdir(parents=True, exist_ok=True)
    write_text(tables_dir / f"{name}.md", md + "\n")
    write_text(tables_dir / f"{name}.csv", csv_frame(blocks, columns).to_csv(index=False, na_rep=MISSING))
    write_text(tables_dir / f"{name}.tex", latex(blocks, columns) + "".join(f"% {n}\n" for n in footnotes))
    plotted = pareto_plot(ours, paper, figures_dir / f"pareto_{name}.png", f"{title}: accuracy vs latency")
    print(md)
    print(f"\nwritten: {tables_dir / name}.{{md,csv,tex}}", end="")
    print(f", {figures_dir / f'pareto_{name}.png'}" if plotted else " (no Pareto plot: no row has both values)")
    return tables_dir / f"{name}.md"
