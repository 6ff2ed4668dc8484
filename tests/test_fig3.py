"""`make fig3`'s renderer: Table 2's run folders, TTFT segments from complete runs when Native's is one,
else every bar from the latency benchmark's CSV (never both), exit 2 when neither has Native."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import render_fig3  # noqa: E402

from evoprune.harness.common.outputs import write_json  # noqa: E402
from evoprune.harness.evaluation.sweep import job_configs  # noqa: E402
from evoprune.harness.reports import fig3  # noqa: E402
from evoprune.harness.results.resume import RUN_RECORD, identity_config  # noqa: E402
from evoprune.harness.results.run_folder import run_dir  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _jobs(experiment: str, *overrides):
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}", *overrides], return_hydra_config=True)
        return job_configs(cfg)


def _stages(encoder: float, other: float, pruning: float, prefill: float, preprocess: float = 0.5) -> dict:
    """latency.json stage medians in seconds (decode and the groups as the runner writes them)."""
    return {
        "preprocess": preprocess,
        "vision_encoder": encoder,
        "other": other,
        "pruning": pruning,
        "prefill": prefill,
        "decode": 7.0,
        "samples": 4,
    }


def _write_run(folder: Path, stages: dict, complete: bool = True) -> None:
    """A run folder whose latency.json has the Video-MME stand-in and a much slower other task."""
    decoy = _stages(100.0, 100.0, 100.0, 100.0)
    write_json(folder / "latency.json", {"overall": decoy, "per_task": {"smoke_videomme": stages, "smoke_lvb": decoy}})
    if complete:
        write_json(folder / RUN_RECORD, {})


def _folders(tmp_path: Path, runtime: str = "eager") -> dict[str, Path]:
    jobs = _jobs("fig3_smoke", f"output_dir={tmp_path / 'runs'}", f"runtime={runtime}")
    return {job.pruner.method: run_dir(job) for job in jobs}


def _bench_csv(path: Path) -> Path:
    """Benchmark rows at 4 frames (tiny_llava_video_trained's) and at 64; fastervlm only at 64 frames; eager
    (no runtime column, as files before it)."""
    rows = []
    for frames in (4, 64):
        scale = frames / 4
        rows += [
            (frames, "none", 169, 1000.0 * scale, 200.0, 0.0, 3000.0),
            (frames, "evoprune", 64, 500.0 * scale, 40.0, 0.0, 1000.0),
            (frames, "evoprune", 32, 300.0 * scale, 20.0, 0.0, 600.0),
            (frames, "divprune", 64, 1000.0 * scale, 200.0, 50.0, 1000.0),
        ]
    rows.append((64, "fastervlm", 64, 8000.0, 200.0, 10.0, 1000.0))
    stages = ["vision_encoder_ms", "other_ms", "pruning_ms", "prefill_ms"]
    frame = pd.DataFrame(rows, columns=["frames", "method", "budget", *stages])
    frame["preprocess_ms"] = 30.0
    frame["ttft_ms"] = frame[["preprocess_ms", *stages]].sum(axis=1)
    frame["measurement"] = "all layers measured on cpu"
    frame.to_csv(path, index=False)
    return path


def _render(tmp_path: Path, bench: Path):
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'runs'}", f"experiment.bench_csv={bench}"]
    return fig3.render(overrides, tmp_path / "tables", tmp_path / "figures"), overrides


@pytest.mark.parametrize(("fig3", "table2"), [("fig3", "table2"), ("fig3_smoke", "table2_smoke")])
def test_cells_are_table2s_native_and_64_per_frame_runs(fig3, table2):
    ours = {run_dir(job): identity_config(job) for job in _jobs(fig3)}
    papers = [job for job in _jobs(table2) if job.pruner.name not in ("tome", "visionzip", "pooling", "random")]
    theirs = {run_dir(job): identity_config(job) for job in papers if job.budget in (None, 64)}
    assert len(ours) == 7 and ours == theirs  # same folders and the same run identity: the sweep reuses them


def test_the_drawn_task_is_a_leaf_task_of_the_suite():
    tasks = {}
    for experiment in ("fig3", "fig3_smoke"):
        with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=[f"+experiment={experiment}"])
        assert cfg.experiment.task in cfg.benchmark.tasks
        tasks[experiment] = cfg.experiment.task
    # lmms-eval's task names (neither is a group): the runner's per-sample task, latency.json's per_task key.
    assert tasks == {"fig3": "videomme", "fig3_smoke": "smoke_videomme"}


def test_bars_come_from_the_runs_when_natives_run_is_complete(tmp_path):
    folders = _folders(tmp_path)
    _write_run(folders["none"], _stages(2.0, 0.5, 0.0, 4.0, preprocess=1.0))
    _write_run(folders["evoprune"], _stages(1.0, 0.1, 0.0, 2.0))
    _write_run(folders["divprune"], _stages(2.0, 0.5, 0.25, 2.5))
    _write_run(folders["fastervlm"], _stages(0.1, 0.1, 0.1, 0.1), complete=False)  # unfinished: not read
    bench = _bench_csv(tmp_path / "bench.csv")  # has every method: must not fill the gaps
    figure, _ = _render(tmp_path, bench)

    frame = pd.read_csv(tmp_path / "tables" / "fig3_smoke.csv")
    ours = frame[frame.block == "ours"].set_index("method")
    assert set(ours.source) == {"runs"}
    assert ours.loc["none", ["encoder_ms", "other_ms", "llm_ms", "ttft_ms", "preprocess_ms"]].astype(
        float
    ).tolist() == [
        2000.0,
        500.0,
        4000.0,
        6500.0,
        1000.0,
    ]
    assert float(ours.loc["divprune", "other_ms"]) == 750.0  # other + post-encoder pruning
    assert [float(ours.loc["evoprune", c]) for c in ("encoder_x", "other_x", "llm_x")] == pytest.approx([2, 5, 2])
    assert float(ours.loc["evoprune", "ttft_x"]) == pytest.approx(6500 / 3100)
    assert (ours.loc["fastervlm", ["encoder_ms", "ttft_ms", "ttft_x"]] == "—").all()
    assert ours.loc["none", "samples"] == "4"

    md = (tmp_path / "tables" / "fig3_smoke.md").read_text()
    assert "| EvoPrune | eager | 64 | 1000.0 | 100.0 | 2000.0 | 3100.0 | 500.0 | 2.00x | 5.00x | 2.00x | 2.10x |" in md
    assert "| FasterVLM | eager | 64 | — | — | — | — | — | — | — | — | — |" in md
    assert "Not drawn: compiled (no Native in this source)" in md
    assert "| EvoPrune | TTFT | 2x | 2.10x |" in md and "| 1.3x-1.4x | 1.24x (1 of 5) |" in md
    assert "runs: model=tiny_llava_video_trained, limit=None, 4 samples of smoke_videomme" in fig3.title(
        *_title_args(tmp_path, bench)
    )
    assert figure.read_bytes().startswith(PNG_MAGIC)
    tex = (tmp_path / "tables" / "fig3_smoke.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"$\sim$2x" in tex and "—" not in tex


def _title_args(tmp_path: Path, bench: Path):
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'runs'}", f"experiment.bench_csv={bench}"]
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        jobs = job_configs(cfg)
    frame, source, _ = fig3.collect(cfg, jobs)
    return cfg, frame, source


def test_without_natives_run_every_bar_comes_from_the_bench_csv_rows_of_the_models_frames(tmp_path):
    folders = _folders(tmp_path)
    _write_run(folders["none"], _stages(2.0, 0.5, 0.0, 4.0), complete=False)
    _write_run(folders["evoprune"], _stages(0.001, 0.001, 0.0, 0.001))  # complete, but never mixed in
    bench = _bench_csv(tmp_path / "bench.csv")
    figure, _ = _render(tmp_path, bench)

    frame = pd.read_csv(tmp_path / "tables" / "fig3_smoke.csv")
    ours = frame[frame.block == "ours"].set_index("method")
    assert set(ours.source) == {str(bench)}
    assert ours.loc["none", ["encoder_ms", "other_ms", "llm_ms", "ttft_ms"]].astype(float).tolist() == [
        1000.0,
        200.0,
        3000.0,
        4200.0,
    ]
    assert ours.loc["evoprune", ["encoder_ms", "llm_ms"]].astype(float).tolist() == [500.0, 1000.0]  # budget 64
    assert float(ours.loc["divprune", "other_ms"]) == 250.0
    assert (ours.loc[["fastervlm", "vispruner"], "ttft_ms"] == "—").all()  # fastervlm only measured at 64 frames
    cfg, drawn, source = _title_args(tmp_path, bench)
    assert fig3.title(cfg, drawn, source).startswith("scripts/bench_latency.py (random weights, 4 frames")
    assert "all layers measured on cpu" in (tmp_path / "tables" / "fig3_smoke.md").read_text()
    assert figure.read_bytes().startswith(PNG_MAGIC)


def test_without_native_in_either_source_it_exits_2_naming_the_benchmark(tmp_path, capsys):
    folders = _folders(tmp_path)
    _write_run(folders["evoprune"], _stages(1.0, 0.1, 0.0, 2.0))
    bench = tmp_path / "absent.csv"
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'runs'}", f"experiment.bench_csv={bench}"]
    dirs = ["--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures")]
    assert render_fig3.main([*overrides, *dirs]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "scripts/bench_latency.py --model llava_video" in error and f"{bench} does not exist" in error
    assert str(folders["none"]) in error
    assert not (tmp_path / "tables").exists() and not (tmp_path / "figures").exists()


def test_a_bench_csv_without_native_at_the_models_frames_is_no_source(tmp_path, capsys):
    bench = _bench_csv(tmp_path / "bench.csv")
    frame = pd.read_csv(bench)
    frame[~((frame.method == "none") & (frame.frames == 4))].to_csv(bench, index=False)
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'runs'}", f"experiment.bench_csv={bench}"]
    assert render_fig3.main([*overrides, "--tables-dir", str(tmp_path), "--figures-dir", str(tmp_path)]) == 2
    assert "has no Native row (method none, budget 169, frames 4)" in capsys.readouterr().err


def test_both_runtimes_drawn_side_by_side_each_over_its_own_native(tmp_path):
    """Runs: the compiled runs (their own folders) beside the eager ones, each speedup over its runtime's
    Native; the compiled config names its own files. CSV: its compiled rows beside its eager rows."""
    for runtime, scale in (("eager", 1.0), ("compiled", 0.5)):
        folders = _folders(tmp_path, runtime)
        _write_run(folders["none"], _stages(2.0 * scale, 0.5, 0.0, 4.0 * scale))
        _write_run(folders["evoprune"], _stages(1.0, 0.1, 0.0, 2.0 * scale))
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'runs'}", "runtime=compiled"]
    fig3.render(overrides, tmp_path / "tables", tmp_path / "figures")
    ours = pd.read_csv(tmp_path / "tables" / "fig3_smoke_compiled.csv")
    ours = ours[ours.block == "ours"]
    assert ours[["method", "runtime"]].head(4).values.tolist() == [
        ["none", "compiled"],  # the config's runtime first, then the other, cell by cell
        ["none", "eager"],
        ["fastervlm", "compiled"],
        ["fastervlm", "eager"],
    ]
    evoprune = ours[ours.method == "evoprune"].set_index("runtime")
    assert float(evoprune.loc["compiled", "ttft_x"]) == pytest.approx(3500 / 2100)  # (1000 + 500 + 2000) / ...
    assert float(evoprune.loc["eager", "ttft_x"]) == pytest.approx(6500 / 3100)
    md = (tmp_path / "tables" / "fig3_smoke_compiled.md").read_text()
    assert "| Method | Stage | Paper (§4.3 text) | Ours (compiled) | Ours (eager) |" in md
    assert "| EvoPrune | TTFT | 2x | 1.67x | 2.10x |" in md
    assert (tmp_path / "figures" / "fig3_smoke_compiled.png").read_bytes().startswith(PNG_MAGIC)

    bench = _bench_csv(tmp_path / "bench.csv")
    frame = pd.read_csv(bench).assign(runtime="eager")
    compiled = frame.assign(runtime="compiled", vision_encoder_ms=frame.vision_encoder_ms / 4)
    pd.concat([frame, compiled]).to_csv(bench, index=False)
    overrides = ["+experiment=fig3_smoke", f"output_dir={tmp_path / 'none'}", f"experiment.bench_csv={bench}"]
    fig3.render(overrides, tmp_path / "tables", tmp_path / "figures")
    ours = pd.read_csv(tmp_path / "tables" / "fig3_smoke.csv")
    native = ours[(ours.block == "ours") & (ours.method == "none")].set_index("runtime")
    assert native.encoder_ms.astype(float).to_dict() == {"eager": 1000.0, "compiled": 250.0}


def test_every_method_complete_renders_and_says_none_is_missing(tmp_path):
    for method, folder in _folders(tmp_path).items():
        _write_run(folder, _stages(2.0 if method == "none" else 1.0, 0.5, 0.1, 4.0))
    figure, _ = _render(tmp_path, tmp_path / "no-bench.csv")
    md = (tmp_path / "tables" / "fig3_smoke.md").read_text()
    assert figure.read_bytes().startswith(PNG_MAGIC) and "— = no data" not in md.split("## Notes")[0]
    ours = pd.read_csv(tmp_path / "tables" / "fig3_smoke.csv").query("block == 'ours'")
    assert ours.ttft_ms.notna().all() and len(ours) == 7
