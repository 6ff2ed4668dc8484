"""Config composition and the checks that run before any model or data is loaded."""

import pytest
from conftest import REPO_ROOT, compose_config, run_py
from hydra import compose, initialize_config_dir

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.evaluation import runner
from evoprune.harness.evaluation.settings import check_budget, check_config


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


def test_schedule_window_beyond_the_layers_is_a_config_error(tmp_path):
    overrides = ["pruner=evoprune", "budget=32", "pruner.schedule=first", "pruner.n=40", "limit=2"]
    result = run_py(*overrides, f"output_dir={tmp_path}")  # not the checkout's results/runs
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
    result = run_py("benchmark=image", "limit=2", f"output_dir={tmp_path / 'runs'}", env=offline)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Could not load the datasets of benchmark 'image'" in result.stderr
    assert "benchmark=smoke_image" in result.stderr and "data.root" in result.stderr
    assert "lmms-lab-encoder/MMBench: mmbench_en_dev, mmbench_cn_dev" in result.stderr
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=abc", "seed='abc' is invalid"),
        ("seed=-1", "seed=-1 is out of range"),
        ("warmup=-1", "warmup=-1 is negative"),
        ("device=cuda", "device='cuda' but CUDA is not available"),
        ("device=gpu", "device='gpu' is not a device"),
        ("dtype=float8", "dtype='float8' is invalid"),
        ("log_level=LOUD", "log_level='LOUD' is invalid"),
        ("progress=maybe", "progress='maybe' is invalid"),
        ("resume=perhaps", "resume='perhaps' is invalid"),
    ],
)
def test_every_top_level_field_is_typed_and_checked_before_work(override, message, no_heavy_work):
    if override == "device=cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError) as caught:
        runner.evaluate(compose_config(override))
    assert str(caught.value).startswith(message) and "accepted" in str(caught.value) or "CUDA" in message


def test_run_py_bad_dtype_is_an_error_line_with_status_2():
    result = run_py("dtype=float8")
    assert result.returncode == 2
    assert result.stderr.startswith("error: dtype='float8' is invalid") and "bfloat16" in result.stderr
    assert "Traceback" not in result.stderr


def test_sweep_preflight_fails_before_the_first_run(tmp_path):
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_py("-m", "+experiment=table1", f"output_dir={tmp_path / 'runs'}", env=offline)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "preflight: checking 31 run(s)" in result.stderr and "llava-hf/llava-1.5-7b-hf" in result.stderr
    assert not (tmp_path / "runs").exists()
    bad_limit = run_py("-m", "+experiment=table1_smoke", "limit=0", f"output_dir={tmp_path / 'runs'}")
    assert bad_limit.returncode == 2 and "error: limit=0 must be a positive integer" in bad_limit.stderr
    assert not (tmp_path / "runs").exists()


METHODS = ["fastervlm", "vispruner", "dart", "divprune", "cdpruner", "evoprune"]
EXTRA = ["tome", "visionzip", "pooling", "random"]  # not in the paper: after its cells


def _table(budgets):
    return [(m, b) for b in budgets for m in METHODS] + [(m, b) for b in budgets for m in EXTRA]


ABLATIONS = ["evoprune_no_attn_no_div", "evoprune_no_attn", "evoprune_no_div", "evoprune"]


@pytest.mark.parametrize(
    "experiment, runs, model, benchmark",
    [
        ("table1", _table((128, 64, 32)), "llava15_7b", "image"),
        ("table2", _table((64, 32, 16)), "llava_video_7b", "video"),
        ("table2_smoke", _table((64, 32, 16)), "tiny_llava_video_trained", "smoke_video"),
        ("table3", [(m, 64) for m in ABLATIONS], "llava_video_7b", "video"),
    ],
)
def test_experiment_cells_expand_to_native_plus_the_papers_rows(experiment, runs, model, benchmark):
    from evoprune.harness.evaluation.sweep import job_configs

    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
        jobs = job_configs(cfg)
    assert [(job.pruner.name, job.budget) for job in jobs] == [("none", None), *runs]
    assert {job.model.name for job in jobs} == {model} and {job.benchmark.name for job in jobs} == {benchmark}
    assert {job.experiment.paper_table for job in jobs} == {experiment.removesuffix("_smoke")}


def test_a_sweep_job_reuses_the_config_the_preflight_composed_for_its_cell():
    from hydra.core.hydra_config import HydraConfig

    from evoprune.harness.evaluation.sweep import apply_cell, cell_overrides, job_configs

    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        sweep = compose("config", overrides=["+experiment=table3", "limit=2"], return_hydra_config=True)
        jobs = job_configs(sweep)
        for limit, expected in (("limit=2", jobs[3]), ("limit=3", None)):  # the sweep's job; one it did not compose
            overrides = ["+cell=evoprune_no_div-64", "+experiment=table3", limit]
            job = compose("config", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(job)
            fresh = compose("config", overrides=cell_overrides(overrides, job.cell))
            applied = apply_cell(job)
            assert applied == fresh and (applied.pruner.name, applied.budget) == ("evoprune_no_div", 64)
            assert (applied is expected) == (expected is not None)


def test_submitit_slurm_launcher_composes_one_job_per_run():
    """For cluster users: `python run.py -m +experiment=table1 hydra/launcher=submitit_slurm` (no cluster needed)."""
    from hydra.utils import get_class

    from evoprune.harness.evaluation.sweep import job_configs

    overrides = ["+experiment=table1", "hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=1"]
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        jobs = job_configs(cfg)
    launcher = get_class(cfg.hydra.launcher._target_)
    assert launcher.__name__ == "SlurmLauncher" and cfg.hydra.launcher.gpus_per_node == 1
    assert len(jobs) == 31 and cfg.hydra.sweeper.params["+cell"].startswith("none-all,fastervlm-128,")


def test_cells_refuse_their_own_pruner_and_budget_overrides():
    from evoprune.harness.evaluation.sweep import cell_overrides, parse_cell

    assert cell_overrides(["limit=2", "+cell=dart-64"], "dart-64") == ["limit=2", "pruner=dart", "budget=64"]
    assert parse_cell("none-all") == ("none", "null")
    with pytest.raises(ConfigError, match="each cell sets pruner and budget"):
        cell_overrides(["budget=32"], "dart-64")
    with pytest.raises(ConfigError, match="is not <pruner>-<budget>"):
        parse_cell("dart64")
