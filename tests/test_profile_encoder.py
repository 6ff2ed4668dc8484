"""scripts/profile_encoder.py and `evoprune.harness.benchmarks.encoder_profile`: op groups, the work ratios from
the schedule by hand, argument checks, a tiny run's files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import profile_encoder  # noqa: E402

from evoprune.harness.benchmarks import encoder_profile  # noqa: E402


@pytest.mark.parametrize(
    "op, group",
    [
        ("aten::addmm", "linear"),
        ("aten::mm", "linear"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_scaled_dot_product_efficient_attention", "attention"),
        ("aten::bmm", "attention"),
        ("aten::_softmax", "attention"),
        ("aten::baddbmm", "other"),  # EvoPrune's Gram matrix: merge work
        ("aten::gather", "other"),
        ("ProfilerStep*", None),
    ],
)
def test_op_groups(op, group):
    assert encoder_profile.op_group(op) == group


def test_layer_work_by_hand():
    work = encoder_profile.layer_work([10, 6], [4, 0], width=2, mlp_width=8)
    assert work == {
        "linear": [8 * 10 * 4 + 4 * 6 * 2 * 8, 8 * 6 * 4 + 4 * 6 * 2 * 8],
        "attention": [100, 36],
        "other": [16, 12],
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frames", "0"], "--frames and --repeats must be >= 1"),
        (["--repeats", "0"], "--frames and --repeats must be >= 1"),
        (["--shapes", "tiny", "--budget", "145"], "--budget 145 outside [1, 144]"),
    ],
)
def test_bad_arguments_stop_before_any_model_is_built(argv, message, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(profile_encoder, "profile_encoder", no_model)  # the script's run
    with pytest.raises(SystemExit) as stopped:
        profile_encoder.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_tiny_run_writes_its_groups_and_ideals(tmp_path):
    result = profile_encoder.main(["--shapes", "tiny", "--repeats", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "profile_encoder_clip_cpu.json").read_text())
    assert saved["schedule"] == result["schedule"] and sum(result["schedule"]) == 144 - 64
    for side in ("native", "evoprune"):
        grouped = sum(ms for op, ms in result["per_op_ms"][side].items() if encoder_profile.op_group(op))
        assert sum(result["groups_ms"][side].values()) == pytest.approx(grouped)
    tokens, n = [], 145  # 144 patches + CLS
    for merged in result["schedule"]:
        tokens.append(n)
        n -= merged
    assert result["work_ratio"]["attention"] == pytest.approx(24 * 145**2 / sum(t * t for t in tokens))
    for group, ratio in result["work_ratio"].items():
        assert result["ideal_ms"][group] == pytest.approx(result["groups_ms"]["native"][group] / ratio)
    assert "| linear at measured BLAS cost |" in (tmp_path / "profile_encoder_clip_cpu.md").read_text()
