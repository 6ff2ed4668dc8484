"""`make fig4`'s renderer: one run folder per schedule and budget, the merge counts `evoprune.patch` uses,
scores and encoder time read from complete runs only."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from transformers import SiglipVisionConfig, SiglipVisionModel

import evoprune  # noqa: E402
from evoprune.harness.common.outputs import write_json  # noqa: E402
from evoprune.harness.evaluation.sweep import job_configs  # noqa: E402
from evoprune.harness.reports import fig4  # noqa: E402
from evoprune.harness.results.resume import RUN_RECORD  # noqa: E402


def _jobs(*overrides):
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=fig4_smoke", *overrides], return_hydra_config=True)
        return job_configs(cfg)


def test_six_schedules_at_three_budgets_each_get_their_own_run_folder():
    from evoprune.harness.results.run_folder import run_dir

    jobs = _jobs()
    cells = {(job.pruner.schedule, job.budget) for job in jobs}
    assert cells == {(s, b) for s in fig4.STRATEGY_LABELS for b in (16, 32, 64)}
    assert len({run_dir(job) for job in jobs}) == 18


def test_drawn_merge_counts_are_the_ones_the_patched_tower_uses():
    config = SiglipVisionConfig(
        hidden_size=16, intermediate_size=16, num_hidden_layers=26, num_attention_heads=2, image_size=378, patch_size=14
    )
    tower = SiglipVisionModel(config)
    jobs = _jobs()
    counts = fig4.schedules(jobs, 26, 729)
    for job in jobs:
        evoprune.patch(tower, int(job.budget), job.pruner.schedule, feature_layer=-1)
        assert counts[(job.pruner.schedule, int(job.budget))] == evoprune.schedule_of(tower), job.pruner.name
    evoprune.unpatch(tower)
    first = counts[("first", 16)]
    assert sum(first) == 729 - 16 and not any(first[13:])  # N = 13 of 26, as the paper's caption


def test_only_complete_runs_are_read_and_missing_ones_show_as_missing(tmp_path):
    jobs = _jobs(f"output_dir={tmp_path}")
    from evoprune.harness.results.run_folder import run_dir

    done = run_dir(jobs[0])
    write_json(
        done / "metrics.json", {"derived": {"mvbench_test": {"value": 41.5}, "videomme_overall": {"value": None}}}
    )
    write_json(done / "latency.json", {"overall": {"vision_encoder": 0.25}})
    write_json(done / RUN_RECORD, {})
    unfinished = run_dir(jobs[1])  # results without a completion record are not read
    write_json(unfinished / "metrics.json", {"derived": {"mvbench_test": {"value": 99.0}}})
    write_json(unfinished / "latency.json", {"overall": {"vision_encoder": 9.0}})
    frame = fig4.collect(jobs)
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first["MVBench"], first["encoder_s"]) == (41.5, 0.25)
    assert first[["LongVideoBench", "Video-MME"]].isna().all() and second[["MVBench", "encoder_s"]].isna().all()
    table = fig4.markdown(frame)
    assert "| Mean | 16 | 41.5 | — | — | 0.250 |" in table and table.count("—") == 2 + 17 * 4


def test_an_image_experiment_is_refused(tmp_path):
    with pytest.raises(fig4.ConfigError, match="LLaVA-Video"):
        fig4.render(["+experiment=fig4_smoke", "model=tiny_llava", "benchmark=smoke_image"], tmp_path, tmp_path)


@pytest.mark.parametrize(("runtime", "name"), [("eager", "fig4_smoke"), ("compiled", "fig4_smoke_compiled")])
def test_a_compiled_sweep_renders_into_its_own_files(tmp_path, runtime, name):
    overrides = ["+experiment=fig4_smoke", f"output_dir={tmp_path / 'runs'}", f"runtime={runtime}"]
    fig4.render(overrides, tmp_path / "tables", tmp_path / "figures")
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [f"{name}.csv", f"{name}.md"]
    assert (tmp_path / "figures" / f"{name}.png").exists()
