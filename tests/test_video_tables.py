"""`make table3 SMOKE=1`'s machinery on video: the Table 3 sweep on the tiny LLaVA-Video and the smoke
video suite (1 sample per task, 2 frames), rendered in the paper's layout from the per-sample scores (by the
renderer's library call: its command line is test_table1's)."""

import csv
import subprocess
import sys

from conftest import REPO_ROOT

from evoprune.harness.reports import paper_table

ARGS = ["+experiment=table3_smoke", "limit=1", "model.video.frames=2"]


def test_table3_smoke_sweep_renders_the_papers_columns_from_derived_scores(tmp_path):
    args = [*ARGS, f"output_dir={tmp_path / 'runs'}", "progress=false"]
    sweep = subprocess.run(
        [sys.executable, "run.py", "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    paper_table.render([*ARGS, f"output_dir={tmp_path / 'runs'}"], tmp_path / "tables", tmp_path / "figures")
    rows = list(csv.DictReader((tmp_path / "tables" / "table3_smoke.csv").open()))
    ours = [row for row in rows if row["table"] == "ours"]
    labels = [row["label"] for row in ours]
    assert labels == ["Native", "EvoPrune (w/o Attn&Div)", "EvoPrune (w/o Attn)", "EvoPrune (w/o Div)", "EvoPrune"]
    for row in ours:  # every run completed and was scored from its per-sample records: numbers, not "—"
        assert all(float(row[column]) >= 0 for column in ("MVBench", "LongVideoBench", "VideoMME")), row
    # Agreement with Native per Table 3 column only (the suite also maps Table 2's column names).
    agree = sorted(column for column in rows[0] if column.startswith("agree "))
    assert agree == ["agree LongVideoBench", "agree MVBench", "agree VideoMME", "agree all"]
    paper = [row for row in rows if row["table"] == "paper"]
    assert [row["MVBench"] for row in paper][:2] == ["58.0", "54.6"]  # the paper's own values beside ours


def test_a_split_without_samples_is_not_a_missing_run():
    from evoprune.harness.results.tables import MISSING, NO_SAMPLES, _score

    metrics = {"derived": {"videomme_long": {"value": None, "samples": 0}, "videomme_short": {"value": 50.0}}}
    assert _score(metrics, {"derived": "videomme_long", "scale": 1}) == NO_SAMPLES
    assert _score(metrics, {"derived": "videomme_short", "scale": 1}) == 50.0
    assert _score(metrics, {"derived": "mvbench_test", "scale": 1}) == MISSING  # no such tasks in the run
