"""`make table1 SMOKE=1`'s machinery: the sweep killed during its 10th run and resumed, then rendered.

This is the CI smoke table: the 19-run Table 1 sweep on the tiny model and the smoke suite (2 samples
per task), in one process as `make table1 SMOKE=1 LIMIT=2` runs it, into a temporary folder.
"""

import json
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, compose_config, count_lines, kill_when, start

from evoprune.harness.results.paper import load_paper_table
from evoprune.harness.results.resume import parse_journal
from evoprune.harness.results.run_folder import run_dir

# The paper's 19 cells and two extra rows at one budget: one merging in the encoder, one reducing before the
# projector (the other two extra methods run end to end in test_baselines_harness; CI time is short).
EXTRA = ["tome-64", "pooling-64"]
ARGS = ["+experiment=table1_smoke", "limit=2", f"experiment.extra_cells=[{','.join(EXTRA)}]"]
CELLS = [*compose_config("+experiment=table1_smoke").experiment.cells, *EXTRA]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run the sweep, SIGINT it (Ctrl-C) once its 10th run has answered a sample, run it again."""
    root = tmp_path_factory.mktemp("table1")
    args = [*ARGS, f"output_dir={root / 'runs'}", "progress=false"]
    folders = [run_dir(compose_config(*ARGS, f"output_dir={root / 'runs'}", *cell_overrides(c))) for c in CELLS]
    tenth_journal = folders[9] / "partial" / "journal.jsonl"
    first = start(["-m", *args], root / "first")
    first_status = kill_when(first, lambda: count_lines(tenth_journal) >= 1, signal.SIGINT)
    before = {f.name: (f / "run.json").read_bytes() for f in folders if (f / "run.json").exists()}
    journaled = count_lines(tenth_journal)
    journal_rejected = parse_journal(tenth_journal)[1]
    second = subprocess.run(
        [sys.executable, "run.py", "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200
    )
    render = subprocess.run(
        [
            sys.executable,
            "scripts/render_table.py",
            *ARGS,
            f"output_dir={root / 'runs'}",
            f"--tables-dir={root / 'tables'}",
            f"--figures-dir={root / 'figures'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {
        "root": root,
        "folders": folders,
        "before": before,
        "journaled": journaled,
        "journal_rejected": journal_rejected,
        "first_status": first_status,
        "first_stderr": (root / "first.err").read_text(),
        "second": second,
        "render": render,
    }


def cell_overrides(cell):
    pruner, budget = cell.rsplit("-", 1)
    return [f"pruner={pruner}", f"budget={'null' if budget == 'all' else budget}"]


def test_killed_sweep_resumes_without_recomputing(sweep):
    assert sweep["second"].returncode == 0, sweep["second"].stderr[-3000:]
    folders = sweep["folders"]
    assert sorted(sweep["before"]) == sorted(f.name for f in folders[:9])  # killed during the 10th run
    for folder in folders[:9]:  # skipped: their results are untouched
        assert (folder / "run.json").read_bytes() == sweep["before"][folder.name]
        assert f"complete: {folder}" in sweep["second"].stdout
    records = [json.loads((f / "run.json").read_text()) for f in folders]
    assert all(r["samples"] == 6 and r["errors"] == 0 for r in records)
    assert sweep["journaled"] >= 1 and records[9]["resumed_samples"] == sweep["journaled"]
    assert all(r["resumed_samples"] == 0 for r in records[10:])
    assert not any((f / "partial").exists() for f in folders)


def test_ctrl_c_ends_the_sweep_with_one_line_status_130_and_an_intact_journal(sweep):
    assert sweep["first_status"] == 130
    stderr = sweep["first_stderr"]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted after (\d+) of 6 samples of (\S+); rerun the same command to resume .*", last)
    assert match, last
    assert int(match[1]) == sweep["journaled"] and match[2] == str(sweep["folders"][9])
    assert sweep["journal_rejected"] == []  # every journal line whole and intact


def test_smoke_table_renders_all_19_rows_beside_the_paper_then_the_extra_rows(sweep):
    render = sweep["render"]
    assert render.returncode == 0, render.stderr[-3000:]
    md = (sweep["root"] / "tables" / "table1_smoke.md").read_text()
    ours, paper = md.split("## Ours\n")[1].split("## Paper")
    rows = [line for line in ours.splitlines() if line.startswith("| ") and not line.startswith("| *")][1:]
    assert len(rows) == 19 + len(EXTRA)
    section_64 = ours.split("Retain 64 tokens")[1].split("Retain 32 tokens")[0]
    lines = [line for line in section_64.splitlines() if line.startswith("| ") and not line.startswith("| *")]
    labels = [line.split("|")[1].strip() for line in lines]
    assert labels[-2:] == [f"{m} (not in the paper)" for m in ("ToMe", "Pooling")]
    assert labels[:6] == ["FasterVLM", "VisPruner", "DART", "DivPrune", "CDPruner", "EvoPrune (Ours)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        vqa, pre_llm, overall, acc = cells[2], cells[7], cells[9], cells[10]
        assert all(c not in ("—", "") for c in (vqa, pre_llm, overall, acc)), row
        assert cells[5] == "—" and cells[6] == "—"  # MMB-CN, MM-Vet: no smoke counterpart
    assert "| FasterVLM | 128 | 75.5 | 1353 | 58.3 | 54.8 | 33.1 | 1.15 | 0.77 | 0.85 | 72.3 | 94.6 |" in paper
    assert "21 of 21 runs complete" in md and "(not in the paper): baselines the paper does not report" in md
    ttft = md.split("## Time to first token")[1].split("## Notes")[0]
    ttft_rows = [[c.strip() for c in line.strip("|").split("|")] for line in ttft.splitlines() if line.startswith("| ")]
    assert len(ttft_rows) == 2 + 19 + len(EXTRA)  # header, rule, every row
    assert ttft_rows[2][:2] == ["Native", "all"] and ttft_rows[2][3] == ttft_rows[2][5] == "1.00x"
    assert all(float(ms) > 0 for row in ttft_rows[2:] for ms in (row[2], row[4]))
    table = load_paper_table("table1")
    assert len(table) == 19
    csv = (sweep["root"] / "tables" / "table1_smoke.csv").read_text().splitlines()
    assert len(csv) == 1 + (19 + len(EXTRA)) + 19 + 19  # ours (with the extra rows), paper, ours − paper
    assert (sweep["root"] / "tables" / "table1_smoke.tex").read_text().startswith(r"\begin{tabular}")
    assert (sweep["root"] / "figures" / "pareto_table1_smoke.png").stat().st_size > 10_000


def test_make_table1_composes_the_sweep_then_the_render():
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "sweep", "EXPERIMENT=table1_smoke", "LIMIT=3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "run.py -m +experiment=table1_smoke limit=3" in dry.stdout
    assert "scripts/render_table.py +experiment=table1_smoke limit=3" in dry.stdout


def test_the_rerun_labels_each_run_reprints_skipped_summaries_and_stays_quiet(sweep):
    second, folders = sweep["second"], sweep["folders"]
    labels = [line for line in second.stderr.splitlines() if line.startswith("run ")]
    assert labels[0] == f"run 1/{len(CELLS)}: {folders[0].name}"  # no ETA before a run has ended
    assert [label.split(":")[0] for label in labels] == [f"run {k}/{len(CELLS)}" for k in range(1, len(CELLS) + 1)]
    assert all(re.search(r", sweep ETA \d+ (s|min)$", label) for label in labels[1:])
    for folder in folders[:9]:
        assert (folder / "summary.txt").read_text().rstrip("\n") in second.stdout
    assert second.stdout.count("— skipped, its summary above") == 9
    resumed = [line for line in second.stderr.splitlines() if "resuming" in line]
    assert resumed == [f"{folders[9].name}: resuming, {sweep['journaled']} answered sample(s) from the journal"]
    assert "Postprocessing" not in second.stderr and "it/s]" not in second.stderr  # lmms-eval's bars hidden
