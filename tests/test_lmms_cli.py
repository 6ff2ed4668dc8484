"""`lmms-eval --model evoprune`: the registry entry point, model_args → run.py's config, lmms-eval's CLI end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, compose_config
from lmms_eval.api.instance import Instance

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.data.smoke_data import ensure_smoke_data
from evoprune.harness.evaluation.lmms_cli import EvoPruneLMM, compose_run_config, hydra_overrides
from evoprune.harness.evaluation.lmms_model import ERROR_ANSWER

LMMS_EVAL = Path(sys.executable).parent / "lmms-eval"
SMOKE_TASKS = "evoprune/harness/data/tasks/smoke"


def _lmms_eval(model_args: str, out: Path) -> subprocess.CompletedProcess:
    """lmms-eval's own CLI on one sample of the smoke yes/no task."""
    ensure_smoke_data()
    argv = [str(LMMS_EVAL), "--model", "evoprune", "--model_args", model_args, "--tasks", "smoke_yesno"]
    argv += ["--include_path", SMOKE_TASKS, "--limit", "1", "--output_path", str(out), "--log_samples"]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_lmms_eval_resolves_evoprune_through_its_registry():
    from lmms_eval.models import get_model, list_available_models

    assert "evoprune" in list_available_models(), "entry point not registered: run `pip install -e .` (pyproject.toml)"
    assert get_model("evoprune") is EvoPruneLMM


def test_model_args_compose_the_config_run_py_composes():
    overrides = hydra_overrides({"pruner": "evoprune", "budget": 32, "pruner.ctr": 0.3, "progress": False})
    assert overrides == ["pruner=evoprune", "budget=32", "pruner.ctr=0.3", "progress=false"]
    cfg = compose_run_config(overrides)
    assert cfg == compose_config(*overrides)
    assert cfg.pruner.ctr == 0.3 and cfg.budget == 32 and cfg.progress is False
    # the (unused) benchmark follows the model's media, so a video model passes run.py's checks
    assert compose_run_config(["model=tiny_llava_video"]).benchmark.name == "smoke_video"


@pytest.mark.parametrize(
    "model_args, cli, message",
    [
        ("pruner=evoprune,budget=abc", {}, "budget='abc' is not an integer; use an integer in [1, 576]"),
        ("pruner=nosuch,budget=32", {}, "Could not find 'pruner/nosuch'; accepted 'pruner': cdpruner, dart,"),
        ("pruner=evoprune,pruner.ctr=2", {}, "pruner 'evoprune': ctr=2 must be in [0, 1)"),
        ("pruner=evoprune,records=/", {}, "records='/' must name a file"),
        ("pruner=evoprune,limit=5", {}, "limit=5 is not taken by the evoprune model: use lmms-eval's --limit"),
        ("pruner=evoprune", {"batch_size": "4"}, "batch_size='4': the evoprune model answers one sample at a time"),
        ("device=cpu", {"device": "cuda"}, "conflicting settings: device='cpu' in --model_args but 'cuda'"),
    ],
)
def test_bad_model_args_fail_before_the_model_loads(no_heavy_work, model_args, cli, message):
    with pytest.raises(ConfigError) as caught:
        EvoPruneLMM.create_from_arg_string(model_args, {"batch_size": 1, "max_batch_size": None, **cli})
    assert message in str(caught.value)


def test_a_failing_sample_is_answered_error_answer_and_reported(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    lm = EvoPruneLMM.create_from_arg_string(f"pruner=evoprune,budget=32,device=cpu,warmup=0,records={records}")
    assert type(lm.pruner).__name__ == "EvoPrunePruner" and lm.pruner.budget == 32
    lm.task_dict = {"toy": {"test": [{"path": tmp_path / "missing.png"}]}}
    request = Instance(
        request_type="generate_until",
        arguments=("Q?", {"max_new_tokens": 2}, lambda doc: str(doc["path"]) + ".png", 0, "toy", "test"),
        idx=0,
        metadata={"task": "toy", "doc_id": 0, "repeats": 1},
    )
    assert lm.generate_until([request]) == [ERROR_ANSWER]
    err = capsys.readouterr().err
    assert "evoprune: 1 samples, 1 failed" in err and "toy doc 0: " in err
    assert "lmms-eval's exit status does not count them" in err
    (row,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert row["answer"] == ERROR_ANSWER and row["error"]


def test_lmms_eval_cli_runs_the_pruned_model_end_to_end(tmp_path):
    records = tmp_path / "records.jsonl"
    result = _lmms_eval(f"pruner=evoprune,budget=32,device=cpu,warmup=0,records={records}", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evoprune: model=tiny_llava pruner=evoprune budget=32 device=cpu" in result.stderr, result.stderr[-3000:]
    assert "evoprune: 1 samples, 0 failed; visual tokens reaching the LLM per sample: 32" in result.stderr
    (row,) = [json.loads(line) for line in records.read_text().splitlines()]
    assert row["error"] is None and (row["visual_tokens_before"], row["visual_tokens_after"]) == (576, 32)

    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["smoke_yesno"]["effective"] == 1
    assert "EvoPruneLMM" in results["config"]["model_backend"]
    (samples_file,) = (tmp_path / "out").rglob("*_samples_smoke_yesno.jsonl")
    (sample,) = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sample["filtered_resps"] == row["answer"]  # lmms-eval scored our model's answer


def test_lmms_eval_cli_names_a_bad_model_arg(tmp_path):
    result = _lmms_eval("pruner=evoprune,budget=abc,device=cpu", tmp_path / "out")
    # lmms-eval's CLI logs the model's exception and still exits 0 (as documented in lmms_cli.py)
    assert result.returncode == 0
    assert "budget='abc' is not an integer" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()
