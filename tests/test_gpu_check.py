"""The prepared device check runs here on tiny shapes (the GPU run is the same script)."""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT

# What the lent GPU machines lack (they have torch, transformers and transformers' own dependencies).
ABSENT_THERE = ("lmms_eval", "hydra", "omegaconf", "pandas", "datasets", "decord", "av", "scipy", "matplotlib", "PIL")


def test_device_check_runs_on_tiny_shapes_and_checks_the_fused_importance(tmp_path):
    """Run as on a lent machine: every package it lacks made unimportable (in each Python process started)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({ABSENT_THERE!r}))\n")
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--shapes", "tiny", "--device", "cpu", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocker)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    float32 = [row for row in result["attention"] if row["dtype"] == "float32"]
    assert len(float32) == 4 and all(row["fused"] and row["same_protected_set"] for row in float32)
    assert max(row["importance_max_rel_error"] for row in float32) <= 1e-5
    assert (tmp_path / "bench_encoder_cpu_tiny.md").exists()
    assert (tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").exists()
    # the TTFT step needs the harness's packages: without them it says so, and the steps before it stand
    assert "## Time to first token: not run (ModuleNotFoundError: import of omegaconf halted" in done.stdout
    assert "make device-wheels" in done.stdout.splitlines()[-1]
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
