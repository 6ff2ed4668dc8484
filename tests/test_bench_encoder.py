"""scripts/bench_encoder.py: the FLOP prediction by hand, argument checks, output names, one tiny run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_encoder  # noqa: E402

from evoprune.harness.benchmarks import encoder, flops, shapes  # noqa: E402


def test_layer_flops_by_hand():
    # 10 tokens, 2 merged, d = 4, MLP 8: projections 8·10·16 = 1280, attention 4·100·4 = 1600,
    # MLP on the 8 left 4·8·4·8 = 1024.
    assert flops.layer_flops(10, 2, 4, 8) == 1280 + 1600 + 1024


def test_encoder_flops_counts_the_tokens_each_layer_sees():
    # Schedule [2, 0]: layer 0 on 10 (+1 CLS) tokens merging 2, layer 1 on 8 (+1).
    expected = flops.layer_flops(11, 2, 4, 8) + flops.layer_flops(9, 0, 4, 8)
    assert flops.encoder_flops([2, 0], 10, 1, 4, 8) == expected


def test_predict_siglip_so400m_at_the_video_budgets():
    # The real so400m shapes, skip schedule over all 26 layers (feature layer −1), as patch() builds it.
    from evoprune.schedules import merge_schedule

    so400m = shapes.SIGLIP_SO400M_384
    schedules = {b: merge_schedule("skip", 729, b, 26, n=13, alpha=1.0) for b in (64, 32, 16)}
    rows = encoder.predict([64, 32, 16], 729, 26, 0, so400m["hidden_size"], so400m["intermediate_size"], schedules)
    # Native by hand: 26 layers of 8·729·1152² + 4·729²·1152 + 4·729·1152·4304.
    native = 26 * (8 * 729 * 1152**2 + 4 * 729**2 * 1152 + 4 * 729 * 1152 * 4304)
    assert rows[729] == (pytest.approx(native / 1e9), 1.0)
    assert [round(rows[b][1], 3) for b in (64, 32, 16)] == [1.982, 2.092, 2.191]
    assert rows[64][0] == pytest.approx(native / 1.982386396 / 1e9)


def test_result_names_keep_the_clip_ones():
    assert encoder.result_stem("clip", "cpu", 1, "real") == "bench_encoder_cpu"
    assert encoder.result_stem("siglip", "cpu", 64, "real") == "bench_encoder_siglip_f64_cpu"
    assert encoder.result_stem("siglip", "cuda", 8, "tiny") == "bench_encoder_siglip_f8_cuda_tiny"


def test_tower_defaults():
    clip, render = bench_encoder.parse_args([])
    assert render is None
    assert (clip.frames, clip.budgets, clip.repeats, clip.order, clip.stat) == (
        1,
        [128, 64, 32],
        5,
        "sequential",
        "median",
    )
    assert clip.warmup_frames == 1 and clip.patches == 576
    siglip = encoder.EncoderBench(tower="siglip")
    assert (siglip.frames, siglip.budgets, siglip.order, siglip.stat) == (64, [64, 32, 16], "interleaved", "min")
    assert siglip.patches == 729 and siglip.config.num_hidden_layers == 26 and not siglip.config.vision_use_head


@pytest.mark.parametrize(
    "argv",
    [
        ["--tower", "siglip", "--frames", "0"],
        ["--tower", "siglip", "--budgets", "730"],
        ["--budgets", "577"],
        ["--tower", "siglip", "--budgets", "0"],
        ["--budgets", "64", "64"],
        ["--repeats", "0"],
        ["--warmup", "-1"],
        ["--tower", "siglip", "--warmup-frames", "0"],
        ["--tower", "vit"],
    ],
)
def test_bad_arguments_stop_before_any_model_is_built(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_encoder.parse_args(argv)
    assert stop.value.code == 2


def test_tiny_siglip_run_writes_prediction_and_ratio(tmp_path):
    argv = ["--tower", "siglip", "--shapes", "tiny", "--frames", "2", "--budgets", "64", "16"]
    bench_encoder.main([*argv, "--repeats", "2", "--warmup", "0", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench_encoder_siglip_f2_cpu_tiny.json").read_text())
    patches = 144  # the tiny shapes' 12×12 grid
    meta, rows = data["meta"], data["rows"]
    assert (meta["frames"], meta["order"], meta["statistic"], meta["feature_layer"]) == (2, "interleaved", "min", -1)
    assert [row["budget"] for row in rows] == [patches, 64, 16]
    for row in rows:
        assert len(row["times_ms"]) == 2 and row["encoder_ms"] == pytest.approx(min(row["times_ms"]))
    for row in rows[1:]:
        assert sum(row["schedule"]) == patches - row["budget"]
        assert row["measured_speedup"] == pytest.approx(rows[0]["encoder_ms"] / row["encoder_ms"])
        assert row["measured_over_predicted"] == pytest.approx(row["measured_speedup"] / row["predicted_speedup"])
    # GFLOPs are for the whole batch: twice one frame's.
    per_frame = flops.encoder_flops(rows[1]["schedule"], patches, 0, 32, 64) / 1e9
    assert rows[1]["gflops"] == pytest.approx(2 * per_frame)
    table = (tmp_path / "bench_encoder_siglip_f2_cpu_tiny.md").read_text()
    assert "min of 2 interleaved rounds (native, 64, 16, native, …" in table
    assert "| 144 |" in table and "| 16 |" in table


def test_clip_table_renders_as_before():
    # The CLIP single-image result (written before SigLIP was added) renders to its committed .md unchanged.
    results = Path(__file__).resolve().parents[1] / "results"
    data = json.loads((results / "bench_encoder_cpu.json").read_text())
    assert encoder.render(data) + "\n" == (results / "bench_encoder_cpu.md").read_text()


def test_render_rebuilds_the_md_from_the_json(tmp_path):
    argv = ["--tower", "siglip", "--shapes", "tiny", "--frames", "1", "--budgets", "16", "--repeats", "2"]
    bench_encoder.main([*argv, "--warmup", "0", "--out", str(tmp_path)])
    json_path, md_path = tmp_path / "bench_encoder_siglip_cpu_tiny.json", tmp_path / "bench_encoder_siglip_cpu_tiny.md"
    written = md_path.read_text()
    md_path.unlink()
    bench_encoder.main(["--render", str(json_path)])
    assert md_path.read_text() == written
    row = json.loads(json_path.read_text())["rows"][1]
    assert 0 < row["measured_over_predicted_cpu_time"] < 100
