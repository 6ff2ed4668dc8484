"""The prepared device check runs here on tiny shapes (the GPU run is the same script)."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

# What the lent GPU machines lack (they have torch, transformers and transformers' own dependencies).
ABSENT_THERE = ("lmms_eval", "hydra", "omegaconf", "pandas", "datasets", "decord", "av", "scipy", "matplotlib", "PIL")
IMPORT_NAMES = {"pillow": "PIL", "hydra-core": "hydra"}  # distribution → module, where they differ


def run_without(modules, command: list[str], folder) -> subprocess.CompletedProcess:
    """``command`` run from the repo root, every Python process it starts finding ``modules`` unimportable (a
    sitecustomize.py written into ``folder``)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({tuple(modules)!r}))\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(folder)}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def device_wheel_modules() -> set[str]:
    """The modules scripts/device_wheels.sh carries to a lent machine (its WHEELS and WHEELS_NO_DEPS)."""
    script = (REPO_ROOT / "scripts" / "device_wheels.sh").read_text()
    names = [
        n for var in ("WHEELS", "WHEELS_NO_DEPS") for n in re.search(rf'^{var}="([^"]*)"', script, re.M)[1].split()
    ]
    return {IMPORT_NAMES.get(name, name) for name in names}


def test_device_check_runs_on_tiny_shapes_and_checks_the_fused_importance(tmp_path):
    """Run as on a lent machine: every package it lacks made unimportable (in each Python process started)."""
    command = ["bash", "scripts/gpu_check.sh", "--shapes", "tiny", "--device", "cpu", "--out", str(tmp_path)]
    done = run_without(ABSENT_THERE, command, tmp_path / "blocker")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    float32 = [row for row in result["attention"] if row["dtype"] == "float32"]
    assert len(float32) == 4 and all(row["fused"] and row["same_protected_set"] for row in float32)
    assert max(row["importance_max_rel_error"] for row in float32) <= 1e-5
    assert (tmp_path / "bench_encoder_cpu_tiny.md").exists()
    assert (tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").exists()
    # the TTFT step needs the harness's packages: without them it says so, and the steps before it stand
    assert "## Time to first token: not run (ModuleNotFoundError: import of omegaconf halted" in done.stdout
    skipped = {"part": "time to first token", "status": "skipped", "seconds": 0.0}
    assert result["parts"][-1] == skipped | {"reason": result["parts"][-1]["reason"]}
    assert result["parts"][-1]["reason"].endswith("run `make device-wheels` and carry .device-wheels")
    assert done.stdout.splitlines()[-1].startswith("gpu_check: parts 3 done, 0 failed, 1 skipped;")
    assert result["targets"] == []
    assert "not judged: the time-to-first-token step did not run" in done.stdout
    assert (tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").read_text().rstrip() in done.stdout


def test_ttft_step_times_native_and_the_pruned_runs_eager_and_compiled(tmp_path, eager_compile_backend):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import ttft_check

    args = ["--shapes", "tiny", "--device", "cpu", "--models", "llava15", "--repeats", "1", "--out", str(tmp_path)]
    assert ttft_check.main(args) == 0
    rows = json.loads((tmp_path / "ttft_check_cpu_tiny.json").read_text())["rows"]
    runs = [(row["runtime"], row["method"], row["budget"], row["visual_tokens"]) for row in rows]
    assert runs == [
        (runtime, method, budget, tokens)
        for runtime in ("eager", "compiled")
        for method, budget, tokens in (("none", None, 576), ("fastervlm", 64, 64), ("evoprune", 64, 64))
    ]
    assert all(row["model_ttft_ms"] > 0 and row["ttft_ms"] >= row["model_ttft_ms"] for row in rows)
    assert [row["model_ttft_x"] for row in rows if row["method"] == "none"] == [1.0, 1.0]
    assert "| LLaVA-1.5-7B | 1 | compiled | evoprune | 64 | 64 |" in (tmp_path / "ttft_check_cpu_tiny.md").read_text()


def test_a_failing_step_is_reported_and_the_steps_after_it_still_run(tmp_path, monkeypatch, capsys):
    from evoprune.harness.benchmarks import device_check, ttft

    def no_kernel(device, shapes):
        raise RuntimeError("no kernel image is available for execution on the device")

    def timed_native_only(shapes, device, out, parts, **kwargs):  # the TTFT step's rows and table, without a model
        parts.run("LLaVA-1.5-7B: build", lambda: None)
        row = {"model": "LLaVA-1.5-7B", "method": "none", "budget": None, "runtime": "compiled"}
        (out / "ttft_check_cpu_tiny.md").write_text("## Time to first token (stand-in)\n")
        return [row | {"prefill_ms": 20.0, "vision_encoder_ms": 9.0, "model_ttft_x": 1.0, "encoder_x": 1.0}]

    monkeypatch.setattr(device_check, "check_attention", no_kernel)
    monkeypatch.setattr(ttft, "check_ttft", timed_native_only)
    status = device_check.run_device_check("tiny", "cpu", tmp_path, ["attention", "encoder", "ttft"])
    assert status == 1
    result = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    assert [(part["part"], part["status"]) for part in result["parts"]] == [
        ("fused importance vs the explicit formula", "failed"),
        ("encoder latency: bench_encoder_cpu_tiny", "done"),
        ("encoder latency: bench_encoder_siglip_f2_cpu_tiny", "done"),
        ("LLaVA-1.5-7B: build", "done"),
    ]
    # the targets are judged from the TTFT rows: only Native's own number can be, here none of them
    assert [item["verdict"] for item in result["targets"]] == ["not measured"] * 8
    assert "## Time to first token (stand-in)" in (tmp_path / "gpu_check_cpu_tiny.md").read_text()
    assert result["parts"][0]["reason"] == "RuntimeError: no kernel image is available for execution on the device"
    assert (tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").exists()
    text = (tmp_path / "gpu_check_cpu_tiny.md").read_text()
    assert "| fused importance vs the explicit formula | failed | RuntimeError: no kernel image" in text
    assert capsys.readouterr().out.splitlines()[-1].startswith("gpu_check: parts 3 done, 1 failed, 0 skipped;")


def test_a_run_killed_during_compilation_keeps_the_eager_rows_already_timed(tmp_path, monkeypatch):
    """The TTFT step writes its files after each model and runtime: a kill (here an interrupt) loses only the
    runtime being timed."""
    from evoprune.harness.benchmarks import ttft
    from evoprune.harness.benchmarks.parts import Parts

    real_build_runtime = ttft.build_runtime

    def killed_when_compiling(name, *args, **kwargs):
        if name == "compiled":
            raise KeyboardInterrupt
        return real_build_runtime(name, *args, **kwargs)

    monkeypatch.setattr(ttft, "build_runtime", killed_when_compiling)
    with pytest.raises(KeyboardInterrupt):
        ttft.check_ttft("tiny", "cpu", ["llava15"], ["eager", "compiled"], 1, tmp_path, parts=Parts())
    rows = json.loads((tmp_path / "ttft_check_cpu_tiny.json").read_text())["rows"]
    assert [(row["runtime"], row["method"]) for row in rows] == [
        ("eager", "none"),
        ("eager", "fastervlm"),
        ("eager", "evoprune"),
    ]
    assert "| LLaVA-1.5-7B | 1 | eager | evoprune | 64 | 64 |" in (tmp_path / "ttft_check_cpu_tiny.md").read_text()


def test_runs_after_a_failed_compiled_native_have_no_speedup_and_the_command_exits_1(
    tmp_path, monkeypatch, capsys, eager_compile_backend
):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import ttft_check

    from evoprune.harness.benchmarks import ttft

    real_build_runtime = ttft.build_runtime
    builds = []

    def native_fails_to_compile(*args, **kwargs):  # Native's run is built first
        builds.append(args[0])
        if len(builds) == 1:
            raise RuntimeError("inductor: compilation failed")
        return real_build_runtime(*args, **kwargs)

    monkeypatch.setattr(ttft, "build_runtime", native_fails_to_compile)
    monkeypatch.setattr(ttft, "PLAN", {"llava15": (ttft.PLAN["llava15"][0], ttft.PLAN["llava15"][1][:2])})
    args = ["--shapes", "tiny", "--device", "cpu", "--models", "llava15", "--runtimes", "compiled"]
    assert ttft_check.main([*args, "--repeats", "1", "--out", str(tmp_path)]) == 1
    rows = json.loads((tmp_path / "ttft_check_cpu_tiny.json").read_text())["rows"]
    assert [(row["method"], row["encoder_x"], row["model_ttft_x"]) for row in rows] == [("fastervlm", None, None)]
    out = capsys.readouterr().out
    assert "| LLaVA-1.5-7B | 1 | compiled | fastervlm | 64 | 64 |" in out and "| – | – |" in out
    assert "| LLaVA-1.5-7B 1 frame(s) compiled: none | failed | RuntimeError: inductor: compilation failed |" in out


def test_the_ttft_step_needs_nothing_beyond_a_lent_machine_and_the_device_wheels(tmp_path):
    """Both models' runs, eager, in a process where only what the machine has and the wheels carry imports."""
    from evoprune.harness.benchmarks.latency_models import MODELS, sample_visual

    absent = [name for name in ABSENT_THERE if name not in device_wheel_modules()]
    assert absent == ["lmms_eval", "pandas", "datasets", "av", "scipy", "matplotlib"]
    clip = sample_visual(MODELS["llava_video"], tmp_path)  # with PyAV here; make device-wheels carries it there
    args = ["--shapes", "tiny", "--device", "cpu", "--runtimes", "eager", "--repeats", "1", "--clip", str(clip)]
    done = run_without(absent, [sys.executable, "scripts/ttft_check.py", *args, "--out", str(tmp_path)], tmp_path / "b")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "ttft_check_cpu_tiny.json").read_text())["rows"]
    assert [(row["model"], row["method"]) for row in rows] == [
        ("LLaVA-1.5-7B", "none"),
        ("LLaVA-1.5-7B", "fastervlm"),
        ("LLaVA-1.5-7B", "evoprune"),
        ("LLaVA-Video-7B-Qwen2", "none"),
        ("LLaVA-Video-7B-Qwen2", "evoprune"),
        ("LLaVA-Video-7B-Qwen2", "fastervlm"),
        ("LLaVA-Video-7B-Qwen2", "dart"),
    ]


def test_a_pruner_that_cannot_be_built_fails_its_part_not_the_check(tmp_path, monkeypatch):
    from evoprune.harness.benchmarks import ttft
    from evoprune.harness.benchmarks.parts import Parts

    real_pruner = ttft._pruner

    def no_hydra_for_fastervlm(name, budget):
        if name == "fastervlm":
            raise ModuleNotFoundError("No module named 'hydra'")
        return real_pruner(name, budget)

    monkeypatch.setattr(ttft, "_pruner", no_hydra_for_fastervlm)
    parts = Parts()
    assert ttft.check_ttft("tiny", "cpu", ["llava15"], ["eager"], 1, tmp_path, parts=parts) == []
    assert [(r["part"], r["status"], r["reason"]) for r in parts.records] == [
        ("LLaVA-1.5-7B: build", "done", ""),
        (
            "LLaVA-1.5-7B 1 frame(s) eager: none, fastervlm-64, evoprune-64",
            "failed",
            "ModuleNotFoundError: No module named 'hydra'",
        ),
    ]
