"""`python run.py` on the smoke suite with the tiny model, as a user runs it."""

import json
import shutil

import pytest
from conftest import run_py
from omegaconf import OmegaConf

from evoprune.harness.common.outputs import write_json
from evoprune.harness.common.timing import STAGES
from evoprune.harness.data.smoke_data import ensure_smoke_data
from evoprune.harness.evaluation.runner import _native_comparison

RUN_FILES = {"config.yaml", "samples.jsonl", "metrics.json", "latency.json", "summary.txt", "run.json"}
SAMPLE_FIELDS = {
    "task",
    "doc_id",
    "prompt",
    "answer",
    "target",
    "score",
    "times",
    "visual_tokens_before",
    "visual_tokens_after",
    "newline_tokens",
    "frames",
    "error",
    "from_journal",
    "graphs_compiled",
}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def default_run(runs_root):
    result = run_py(f"output_dir={runs_root}")
    return result, runs_root / "tiny_llava" / "smoke_image" / "none-all"


def test_default_run_succeeds_and_prints_summary(default_run):
    result, run = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in (*STAGES, "ttft", "total", "pre_llm", "llm"):
        assert f"\n{stage} " in result.stdout
    for task in ("smoke_vqa", "smoke_yesno", "smoke_mcq"):
        assert task in result.stdout
    assert "samples: 100%" in result.stderr  # the progress bar
    assert set(p.name for p in run.iterdir()) == RUN_FILES


def test_default_run_files_hold_every_sample(default_run):
    _, run = default_run
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 108
    assert all(set(row) == SAMPLE_FIELDS for row in rows)
    assert all(row["error"] is None and row["visual_tokens_after"] == 576 for row in rows)
    assert all(set(row["times"]) == {*STAGES, "ttft", "total"} for row in rows)
    assert {row["task"] for row in rows} == {"smoke_vqa", "smoke_yesno", "smoke_mcq"}

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["errors"] == 0 and metrics["samples"] == 108
    assert set(metrics["tasks"]["smoke_mcq"]["metrics"]) == {"accuracy", "needs_judge"}
    assert "exact_match" in metrics["tasks"]["smoke_vqa"]["metrics"]

    latency = json.loads((run / "latency.json").read_text())
    assert latency["overall"]["samples"] == 108
    assert latency["meta"]["device"] == "cpu" and latency["relative_note"] == "this is the native run"
    config = OmegaConf.load(run / "config.yaml")
    assert config.model.name == "tiny_llava" and config.budget is None


def test_evoprune_run_feeds_the_llm_exactly_budget_tokens(default_run, runs_root):
    assert default_run[0].returncode == 0
    result = run_py(f"output_dir={runs_root}", "pruner=evoprune", "budget=32")
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs_root / "tiny_llava" / "smoke_image" / "evoprune-32"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 108
    assert all((row["visual_tokens_before"], row["visual_tokens_after"]) == (576, 32) for row in rows)
    latency = json.loads((run / "latency.json").read_text())
    assert latency["relative_to_native"]["total"] > 0  # compared with the native run beside it
    relative = latency["relative_to_native"]["total"]
    assert f"{1 / relative:.2f}x" in result.stdout and "speedup = the native run's median ÷ this run's" in result.stdout


def test_unreadable_image_is_an_error_not_an_answer(tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(ensure_smoke_data().parent, tasks)
    (tasks / "data" / "images" / "scene_000.png").write_bytes(b"\x89PNG broken")
    result = run_py(
        f"output_dir={tmp_path / 'runs'}",
        f"benchmark.include_path={tasks}",
        "benchmark.synthetic_data=null",
        "limit=2",
        "warmup=0",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    run = tmp_path / "runs" / "tiny_llava" / "smoke_image-limit2" / "none-all"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    failed = [row for row in rows if row["error"]]
    assert failed and all("scene_000.png" in row["error"] for row in failed)
    assert len(failed) < len(rows)  # the rest ran
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["errors"] == len(failed)
    assert f"{len(failed)} of {len(rows)} samples failed" in result.stdout


def _latency_meta(**overrides):
    return {"device": "cpu", "dtype": "float32", "limit": None, **overrides}


def test_ratios_only_against_a_comparable_native_run(tmp_path):
    cfg = OmegaConf.create(
        {
            "output_dir": str(tmp_path),
            "model": {"name": "m"},
            "benchmark": {"name": "b"},
            "pruner": {"name": "p"},
            "budget": 32,
        }
    )
    native_file = tmp_path / "m" / "b" / "none-all" / "latency.json"
    native, why = _native_comparison(cfg, _latency_meta())
    assert native is None and "no native run" in why

    write_json(native_file, {"meta": _latency_meta(device="NVIDIA H100"), "overall": {"total": 1.0}})
    native, why = _native_comparison(cfg, _latency_meta())
    assert native is None and "['device']" in why

    write_json(native_file, {"meta": _latency_meta(), "overall": {"total": 1.0}})
    native, why = _native_comparison(cfg, _latency_meta())
    assert why is None and native["overall"]["total"] == 1.0
