"""scripts/bench_latency.py: the FLOP model by hand, and one tiny-shape run end to end."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_latency  # noqa: E402

BUDGETS = (128, 64, 32)


def test_llm_layer_flops_by_hand():
    # S = 10 tokens, d = 4, ff = 8: projections 2·10·4·16 = 1280, MLP 2·10·3·4·8 = 1920,
    # scores + weighted sum 4·10²·4 = 1600.
    assert bench_latency.llm_layer_flops(10, 4, 8) == 1280 + 1920 + 1600


def test_llm_flops_whole_and_split_by_hand():
    assert bench_latency.llm_flops(10, 4, 8, layers=2) == 2 * 4800
    # DART-style: layer 0 on 10 tokens (4800), layer 1 on 6: 2·6·(64 + 96) + 4·36·4 = 1920 + 576.
    assert bench_latency.llm_flops(10, 4, 8, layers=2, pruned_seq=6, split=1) == 4800 + 2496


def test_projector_flops_by_hand():
    # 3 tokens, 2 → 4 → 4: 2·3·(2·4 + 4·4).
    assert bench_latency.projector_flops(3, 2, 4) == 144


def test_scaled_prefill_extrapolates_the_final_length_layers():
    # Uniform length: the two missing layers cost the mean of the measured ones (0.3 s).
    assert bench_latency.scaled_prefill(1.0, [0.2, 0.4], [10, 10], 4) == pytest.approx(1.6)
    # DART-like: only the layer at the pruned length (6 tokens) stands for the missing ones.
    assert bench_latency.scaled_prefill(1.0, [0.2, 0.2, 0.1], [10, 10, 6], 5) == pytest.approx(1.2)
    assert bench_latency.scaled_prefill(1.0, [0.2, 0.2], [10, 10], 2) == 1.0
    with pytest.raises(ValueError):
        bench_latency.scaled_prefill(1.0, [0.2, 0.2, 0.2], [10, 10, 10], 2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_latency")
    bench_latency.main(["--shapes", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--out", str(out)])
    with open(out / "bench_latency_cpu_tiny.csv", newline="") as handle:
        return out, list(csv.DictReader(handle))


def test_csv_has_native_and_every_method_at_every_budget(tiny_run):
    _, rows = tiny_run
    keys = [(row["method"], int(row["budget"])) for row in rows]
    assert keys[0] == ("none", 576)
    assert sorted(keys[1:]) == sorted((m, b) for m in bench_latency.METHODS for b in BUDGETS)
    for row in rows:
        assert row["repeats"] == "1"
        assert "scaled to 4" in row["llm_scaling"]  # tiny LLM: 3 of 4 layers timed
        for name in bench_latency.TIMED:
            value = float(row[f"{name}_ms"])
            assert math.isfinite(value) and value > 0, (row["method"], row["budget"], name, value)


def test_speedups(tiny_run):
    _, rows = tiny_run
    native, pruned = rows[0], rows[1:]
    for name in bench_latency.SPEEDUPS:
        assert float(native[f"speedup_{name}"]) == 1.0
        assert float(native[f"predicted_{name}"]) == 1.0
    for row in pruned:
        assert int(row["visual_tokens"]) == int(row["budget"])
        assert float(row["predicted_prefill"]) > 1 and float(row["predicted_ttft"]) > 1
        assert all(float(row[f"speedup_{name}"]) > 0 for name in bench_latency.SPEEDUPS)
        # Only EvoPrune removes encoder work; post-encoder and in-LLM selection is not counted.
        if row["method"] == "evoprune":
            assert float(row["predicted_pre_llm"]) > 1
        else:
            assert float(row["predicted_pre_llm"]) == 1.0
        if row["method"] == "dart":  # its first K layers still see every visual token
            assert int(row["llm_tokens"]) == int(native["llm_tokens"]) - 576 + int(row["budget"])
            post = next(r for r in pruned if r["method"] == "fastervlm" and r["budget"] == row["budget"])
            assert float(row["predicted_prefill"]) < float(post["predicted_prefill"])


def test_markdown_and_figure_written(tiny_run):
    out, _ = tiny_run
    text = (out / "bench_latency_cpu_tiny.md").read_text()
    assert "3 of 4 full-width decoder layers measured" in text and "EvoPrune" in text
    png = out / "figures" / "fig3_ttft_cpu_tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_identical_stages_are_pooled_and_own_work_is_not():
    def run(method, budget, llm_tokens, encoder, pruning, prefill):
        samples = [
            {"preprocess": 0.01, "vision_encoder": e, "other": 0.1, "pruning": p, "prefill": f}
            | {"prefill_measured": f, "pre_llm": e + 0.1 + p, "ttft": 0.01 + e + 0.1 + p + f}
            for e, p, f in zip(encoder, pruning, prefill, strict=True)
        ]
        return bench_latency.Run(method, budget, pruner=None, samples=samples, llm_tokens=llm_tokens)

    native = run("none", None, 632, [2.0, 2.0, 2.0], [0.0] * 3, [9.0] * 3)
    faster = run("fastervlm", 64, 120, [5.0, 5.0, 5.0], [0.2] * 3, [3.0] * 3)
    evo = run("evoprune", 64, 120, [1.0, 1.0, 1.0], [0.0] * 3, [1.0] * 3)
    medians = bench_latency.stage_medians([native, faster, evo], pool=True)
    # Native encoder pooled over native + FasterVLM (six samples: 2, 2, 2, 5, 5, 5 → median 3.5);
    # EvoPrune's encoder is its own; the 120-token prefill is pooled over FasterVLM and EvoPrune.
    assert medians[0]["vision_encoder"] == medians[1]["vision_encoder"] == 3.5
    assert medians[2]["vision_encoder"] == 1.0
    assert medians[1]["prefill"] == medians[2]["prefill"] == 2.0 and medians[0]["prefill"] == 9.0
    assert medians[1]["pruning"] == 0.2 and medians[1]["own_vision_encoder"] == 5.0
    assert medians[1]["pre_llm"] == pytest.approx(3.5 + 0.1 + 0.2)
    assert medians[1]["ttft"] == pytest.approx(0.01 + 3.5 + 0.1 + 0.2 + 2.0)
    unpooled = bench_latency.stage_medians([native, faster, evo], pool=False)
    assert unpooled[1]["vision_encoder"] == 5.0 and unpooled[1]["ttft"] == pytest.approx(0.01 + 5.3 + 3.0)
