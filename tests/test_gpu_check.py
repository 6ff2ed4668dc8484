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
    assert done.stdout.rstrip().endswith((tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").read_text().rstrip())
