"""Config composition and the checks that run before any model or data is loaded."""

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, compose_config

from evoprune.harness import runner
from evoprune.harness.settings import ConfigError, check_budget, check_config


def run_py(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def test_default_composition():
    cfg = compose_config()
    assert cfg.model.name == "tiny_llava"
    assert cfg.pruner.name == "none"
    assert cfg.benchmark.name == "smoke_image"
    assert cfg.budget is None and cfg.limit is None
    assert cfg.device == "auto" and cfg.dtype == "auto"
    assert cfg.benchmark.tasks == ["smoke_vqa", "smoke_yesno", "smoke_mcq"]


def test_real_model_and_image_suite_compose():
    cfg = compose_config("model=llava15_7b", "benchmark=image")
    assert cfg.model.path == "llava-hf/llava-1.5-7b-hf"
    assert cfg.model.num_visual_tokens == 576
    assert list(cfg.benchmark.tasks) == ["vqav2_val", "mme", "mmbench_en_dev", "mmbench_cn_dev", "mmvet"]


def test_cfg_job_prints_composed_config():
    result = run_py("--cfg", "job", "budget=null", "limit=3")
    assert result.returncode == 0, result.stderr
    assert "name: tiny_llava" in result.stdout and "limit: 3" in result.stdout


@pytest.mark.parametrize(
    "override, listed",
    [
        ("model=nope", "tiny_llava"),
        ("pruner=nope", "none"),
        ("benchmark=nope", "smoke_image"),
        ("+experiment=nope", "table1, table1_smoke"),
    ],
)
def test_unknown_group_choice_lists_the_options(override, listed):
    result = run_py(override)
    group = override.lstrip("+").split("=")[0]
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {group}='nope' is not one of: ")
    assert listed in result.stderr


@pytest.mark.parametrize("budget", [0, -3, 577, 3.5, "32", True])
def test_bad_budget_names_field_and_range(budget):
    with pytest.raises(ConfigError, match=r"budget=.*(\[1, 576\])"):
        check_budget(budget, 576, "some_pruner")


def test_budget_without_pruner_is_refused():
    with pytest.raises(ConfigError, match="budget=32 needs a pruner"):
        check_budget(32, 576, "none")


def test_valid_budgets_pass():
    check_budget(None, 576, "none")
    for budget in (1, 32, 576):
        check_budget(budget, 576, "some_pruner")


@pytest.mark.parametrize("preset", ["evoprune_no_attn", "evoprune_no_div", "evoprune_no_attn_no_div"])
def test_table3_presets_switch_off_their_terms(preset):
    pruner = compose_config(f"pruner={preset}").pruner
    assert pruner.method == "evoprune" and pruner.name == preset
    assert pruner.use_attn == ("no_attn" not in preset)
    assert pruner.use_div == ("no_div" not in preset)
    assert pruner.schedule == "skip" and pruner.ctr == 0.25


@pytest.mark.parametrize(
    "override, message",
    [
        ("pruner.schedule=zigzag", "pruner.schedule='zigzag' is not one of: mean, skip"),
        ("pruner.ctr=1.5", "ctr=1.5 must be in [0, 1)"),
        ("pruner.k=0", "k=0"),
        ("pruner.tau=0", "tau=0"),
        ("pruner.metric=values", "metric='values'"),
    ],
)
def test_bad_evoprune_options_fail_before_loading(override, message, no_heavy_work):
    with pytest.raises(ConfigError) as caught:
        runner.evaluate(compose_config("pruner=evoprune", "budget=32", override))
    assert message in str(caught.value)


def test_schedule_window_beyond_the_layers_is_a_config_error():
    result = run_py("pruner=evoprune", "budget=32", "pruner.schedule=first", "pruner.n=40", "limit=1")
    assert result.returncode == 2
    assert "N in [1, 23]" in result.stderr and "N=40" in result.stderr


@pytest.mark.parametrize("limit", [0, -1, 2.5])
def test_bad_limit(limit):
    cfg = compose_config(f"limit={limit}")
    with pytest.raises(ConfigError, match="limit="):
        check_config(cfg)


def test_bad_budget_fails_before_tasks_or_model_load(no_heavy_work):
    with pytest.raises(ConfigError, match="budget"):
        runner.evaluate(compose_config("budget=600"))


def test_run_py_bad_budget_exits_nonzero_with_message():
    result = run_py("budget=abc")
    assert result.returncode == 2
    assert "budget='abc' is not an integer" in result.stderr


def test_real_benchmark_without_datasets_fails_before_the_model_loads(tmp_path):
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = run_py("benchmark=image", "limit=1", f"output_dir={tmp_path / 'runs'}", env=offline)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Could not load the datasets of benchmark 'image'" in result.stderr
    assert "benchmark=smoke_image" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_real_model_without_weights_fails_at_once_naming_override(tmp_path):
    empty_cache = tmp_path / "hf"
    result = run_py("model=llava15_7b", f"output_dir={tmp_path / 'runs'}", env={"HF_HOME": str(empty_cache)})
    assert result.returncode == 2
    assert "llava-hf/llava-1.5-7b-hf" in result.stderr
    assert "model.path=" in result.stderr
    assert "samples" not in result.stderr  # no evaluation started
    assert not (tmp_path / "runs").exists()
