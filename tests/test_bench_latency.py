"""scripts/bench_latency.py: the FLOP model by hand, tiny-shape runs of both models end to end (token
counts per frame, linear scaling of the vision side, shared LLM-side timings), resume after a kill."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_latency  # noqa: E402

from baselines.pooling import nearest_square_side  # noqa: E402
from evoprune.harness.benchmarks import (  # noqa: E402
    flops,
    latency,
    latency_journal,
    latency_models,
    latency_report,
    latency_runs,
    latency_summary,
)
from evoprune.harness.inference.evoprune_pruner import EvoPrunePruner  # noqa: E402
from evoprune.harness.inference.pruning import Pruner  # noqa: E402

ALL_METHODS = (*latency_runs.METHODS, *latency_runs.EXTRA_METHODS)
# Methods that hand the projector fewer tokens than the tower's grid (so the FLOP model predicts a pre-LLM gain).
FEWER_TO_PROJECTOR = ("evoprune", "tome", "visionzip", "pooling")


def _kept(method: str, budget: int) -> int:
    """Visual tokens per frame a method keeps: pooling's nearest square grid, else the budget."""
    return nearest_square_side(budget) ** 2 if method == "pooling" else budget


IMAGE_BUDGETS = (128, 64, 32)
VIDEO_ARGS = ["--model", "llava_video", "--shapes", "tiny", "--device", "cpu", "--frames", "1", "4"]
VIDEO_ARGS += ["--budgets", "64", "16", "--warmup", "0"]
TEXT_FREE = 169 + 13  # a native frame: 13x13 pooled tokens + a newline per row


def test_llm_layer_flops_by_hand():
    # S = 10 tokens, d = 4, ff = 8: projections 2·10·4·16 = 1280, MLP 2·10·3·4·8 = 1920,
    # scores + weighted sum 4·10²·4 = 1600.
    assert flops.llm_layer_flops(10, 4, 8) == 1280 + 1920 + 1600
    # Grouped-query attention, d_kv = 2: q/o 2·10·2·16 = 640, k/v 2·10·2·4·2 = 320.
    assert flops.llm_layer_flops(10, 4, 8, kv_width=2) == 640 + 320 + 1920 + 1600


def test_llm_flops_whole_and_split_by_hand():
    assert flops.llm_flops(10, 4, 8, layers=2) == 2 * 4800
    # DART-style: layer 0 on 10 tokens (4800), layer 1 on 6: 2·6·(64 + 96) + 4·36·4 = 1920 + 576.
    assert flops.llm_flops(10, 4, 8, layers=2, pruned_seq=6, split=1) == 4800 + 2496


def test_projector_flops_by_hand():
    # 3 tokens, 2 → 4 → 4: 2·3·(2·4 + 4·4).
    assert flops.projector_flops(3, 2, 4) == 144


def test_scaled_prefill_extrapolates_the_final_length_layers():
    # Uniform length: the two missing layers cost the mean of the measured ones (0.3 s).
    assert latency_runs.scaled_prefill(1.0, [0.2, 0.4], [10, 10], 4) == pytest.approx(1.6)
    # DART-like: only the layer at the pruned length (6 tokens) stands for the missing ones.
    assert latency_runs.scaled_prefill(1.0, [0.2, 0.2, 0.1], [10, 10, 6], 5) == pytest.approx(1.2)
    assert latency_runs.scaled_prefill(1.0, [0.2, 0.2], [10, 10], 2) == 1.0
    with pytest.raises(ValueError):
        latency_runs.scaled_prefill(1.0, [0.2, 0.2, 0.2], [10, 10, 10], 2)


def test_tile_frames_repeats_cyclically():
    import torch

    tiled = latency_runs.tile_frames(torch.arange(3)[:, None], 7)
    assert tiled.flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert latency_runs.tile_frames(None, 7) is None


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_latency")
    bench_latency.main(["--shapes", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--out", str(out)])
    return out, _read(out / "bench_latency_cpu_tiny.csv")


def test_image_csv_has_native_and_every_method_at_every_budget(image_run):
    _, rows = image_run
    keys = [(row["method"], int(row["budget"])) for row in rows]
    assert keys[0] == ("none", 576)
    assert sorted(keys[1:]) == sorted((m, b) for m in ALL_METHODS for b in IMAGE_BUDGETS)
    for row in rows:
        assert row["repeats"] == "1" and row["frames"] == "1"
        assert "1 of 4 full-width decoder layers measured" in row["measurement"]  # tiny LLM
        for name in latency_runs.TIMED:
            value = float(row[f"{name}_ms"])
            assert math.isfinite(value) and value > 0, (row["method"], row["budget"], name, value)


def test_image_speedups(image_run):
    _, rows = image_run
    native, pruned = rows[0], rows[1:]
    for name in latency_runs.SPEEDUPS:
        assert float(native[f"speedup_{name}"]) == 1.0
        assert float(native[f"predicted_{name}"]) == 1.0
    for row in pruned:
        kept = _kept(row["method"], int(row["budget"]))
        assert int(row["visual_tokens"]) == kept and int(row["newline_tokens"]) == 0
        assert float(row["predicted_prefill"]) > 1 and float(row["predicted_ttft"]) > 1
        # Encoder merging and fewer projected tokens count; post-encoder and in-LLM selection does not.
        if row["method"] in FEWER_TO_PROJECTOR:
            assert float(row["predicted_pre_llm"]) > 1
        else:
            assert float(row["predicted_pre_llm"]) == 1.0
        assert int(row["llm_tokens"]) == int(native["llm_tokens"]) - 576 + kept
        if row["method"] == "dart":  # its first K layers still see every visual token
            post = next(r for r in pruned if r["method"] == "fastervlm" and r["budget"] == row["budget"])
            assert float(row["predicted_prefill"]) < float(post["predicted_prefill"])


def test_image_markdown_latex_and_figure_written(image_run):
    out, _ = image_run
    text = (out / "bench_latency_cpu_tiny.md").read_text()
    assert "1 of 4 full-width decoder layers measured" in text and "EvoPrune" in text
    assert r"\begin{tabular}" in (out / "bench_latency_cpu_tiny.tex").read_text()
    png = out / "figures" / "fig3_ttft_cpu_tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*partial.json"))  # the round journal goes once the results are written


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_latency_video")
    bench_latency.main([*VIDEO_ARGS, "--repeats", "1", "--out", str(out)])
    return out, _read(out / "bench_latency_video_cpu_tiny.csv")


def test_video_rows_and_tokens_per_frame(video_run):
    _, rows = video_run
    by_key = {(int(r["frames"]), r["method"], int(r["budget"])): r for r in rows}
    expected = {(f, "none", 169) for f in (1, 4)} | {(f, m, b) for f in (1, 4) for m in ALL_METHODS for b in (64, 16)}
    assert set(by_key) == expected and len(rows) == len(expected)
    for frames in (1, 4):
        native = by_key[frames, "none", 169]
        assert int(native["visual_tokens"]) == 169 * frames and int(native["newline_tokens"]) == 13 * frames
        text = int(native["llm_tokens"]) - TEXT_FREE * frames
        assert text > 0
        for budget in (64, 16):
            for method in ("fastervlm", "vispruner", "divprune", "cdpruner", "dart", "random"):
                row = by_key[frames, method, budget]
                # Every row of every frame keeps its newline; DART keeps frames x budget over the span.
                assert int(row["visual_tokens"]) == budget * frames, (frames, method, budget)
                assert int(row["newline_tokens"]) == 13 * frames
            for method in ("evoprune", "tome", "visionzip"):  # no grid: one newline per frame
                row = by_key[frames, method, budget]
                assert (int(row["visual_tokens"]), int(row["newline_tokens"])) == (budget * frames, frames)
                # The time instruction lists one timestamp per frame: the text grows with the frames, so
                # compare every method with native at the same frame count only.
                assert int(row["llm_tokens"]) == text + (budget + 1) * frames
            pooled, side = by_key[frames, "pooling", budget], nearest_square_side(budget)
            assert (int(pooled["visual_tokens"]), int(pooled["newline_tokens"])) == (
                side * side * frames,
                side * frames,
            )


def test_video_vision_side_is_scaled_linearly_and_prefill_shared(video_run):
    _, rows = video_run
    by_key = {(int(r["frames"]), r["method"], int(r["budget"])): r for r in rows}
    for method, budget in [("none", 169), ("evoprune", 16), ("cdpruner", 64)]:
        one, four = by_key[1, method, budget], by_key[4, method, budget]
        for stage in latency_runs.PER_FRAME_STAGES:
            assert float(four[f"{stage}_ms"]) == pytest.approx(4 * float(one[f"{stage}_ms"]), rel=1e-4)
        assert float(four["pruning_ms"]) > 0  # measured on the 4 tiled frames, not scaled
        assert "vision side measured on 1 of 4 frames" in four["measurement"]
        assert "vision side" not in one["measurement"]
    # The post-encoder pruners feed the LLM the same length: one timing, so one prefill.
    post = {by_key[4, m, 64]["prefill_ms"] for m in ("fastervlm", "vispruner", "divprune", "cdpruner")}
    assert len(post) == 1
    assert float(by_key[4, "evoprune", 16]["predicted_pre_llm"]) > 1
    assert float(by_key[4, "fastervlm", 16]["predicted_pre_llm"]) == 1.0


def test_video_figure_and_rerender(video_run, tmp_path):
    out, _ = video_run
    png = out / "figures" / "fig1_cpu_tiny.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_path = out / "bench_latency_video_cpu_tiny.csv"
    bench_latency.main([*VIDEO_ARGS, "--out", str(tmp_path), "--render", str(csv_path), "--figure-budget", "16"])
    assert (tmp_path / "figures" / "fig1_cpu_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_run_resumes_after_its_last_completed_round(tmp_path, monkeypatch):
    real_round, calls = latency.one_round, []

    def dies_in_second_round(*args, **kwargs):
        calls.append(kwargs.get("warmup"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_round(*args, **kwargs)

    monkeypatch.setattr(latency, "one_round", dies_in_second_round)
    args = ["--model", "llava_video", "--shapes", "tiny", "--device", "cpu", "--frames", "1", "4", "--budgets", "16"]
    args += ["--repeats", "2", "--warmup", "0", "--out", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        bench_latency.main(args)
    journal = tmp_path / ".bench_latency_video_cpu_tiny.partial.json"
    assert journal.exists() and not (tmp_path / "bench_latency_video_cpu_tiny.csv").exists()

    calls.clear()
    bench_latency.main(args)
    assert len(calls) == 1  # only the killed round again, not the completed one
    assert not journal.exists()
    rows = _read(tmp_path / "bench_latency_video_cpu_tiny.csv")
    assert {row["repeats"] for row in rows} == {"2"}


def test_journal_of_other_arguments_is_not_reused(tmp_path, capsys):
    path = tmp_path / "journal.json"
    journal = latency_journal.Journal(path, {"frames": [1, 4]})
    journal.add({"vision": {}, "preprocess": {}, "llm": {}})
    assert len(latency_journal.Journal(path, {"frames": [1, 4]}).rounds) == 1
    assert latency_journal.Journal(path, {"frames": [1, 8]}).rounds == []
    assert "starting afresh" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frames", "8"], "reads one image"),
        (["--model", "llava_video", "--budgets", "64", "--figure-budget", "32"], "figure_budget=32"),
        (["--model", "llava_video", "--frames", "0"], "must be >= 1"),
        (["--repeats", "0"], "repeats=0 must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_before_building_anything(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_latency.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_identical_stages_are_pooled_and_own_work_is_not():
    def run(method, budget, encoder, pruning, prefill):
        samples = [
            {"preprocess": 0.01, "vision_encoder": e, "other": 0.1, "pruning": p, "prefill": f}
            | {"prefill_measured": f, "pre_llm": e + 0.1 + p, "ttft": 0.01 + e + 0.1 + p + f}
            for e, p, f in zip(encoder, pruning, prefill, strict=True)
        ]
        pruner = EvoPrunePruner(budget) if method == "evoprune" else Pruner(budget)
        return latency_runs.Run(method, budget, pruner=pruner), samples

    runs, samples = zip(
        run("none", None, [2.0, 2.0, 2.0], [0.0] * 3, [9.0] * 3),
        run("fastervlm", 64, [5.0, 5.0, 5.0], [0.2] * 3, [3.0] * 3),
        run("evoprune", 64, [1.0, 1.0, 1.0], [0.0] * 3, [1.0] * 3),
        strict=True,
    )
    tokens = [632, 120, 120]
    medians = latency_summary.stage_medians(list(runs), list(samples), tokens, pool=True)
    # Native encoder pooled over native + FasterVLM (six samples: 2, 2, 2, 5, 5, 5 → median 3.5);
    # EvoPrune's encoder is its own; the 120-token prefill is pooled over FasterVLM and EvoPrune.
    assert medians[0]["vision_encoder"] == medians[1]["vision_encoder"] == 3.5
    assert medians[2]["vision_encoder"] == 1.0
    assert medians[1]["prefill"] == medians[2]["prefill"] == 2.0 and medians[0]["prefill"] == 9.0
    assert medians[1]["pruning"] == 0.2 and medians[1]["own_vision_encoder"] == 5.0
    assert medians[1]["pre_llm"] == pytest.approx(3.5 + 0.1 + 0.2)
    assert medians[1]["ttft"] == pytest.approx(0.01 + 3.5 + 0.1 + 0.2 + 2.0)
    unpooled = latency_summary.stage_medians(list(runs), list(samples), tokens, pool=False)
    assert unpooled[1]["vision_encoder"] == 5.0 and unpooled[1]["ttft"] == pytest.approx(0.01 + 5.3 + 3.0)


def test_eager_and_compiled_side_by_side_each_against_its_own_native(tmp_path, eager_compile_backend):
    """--runtime eager compiled: every run's graphs side by side, the LLM's final length from the counts (no
    layer hooks), each method's runtimes in adjacent rows with speedups against the same runtime's native,
    the side-by-side table and a figure panel per runtime; a scaled measurement is refused before any work."""
    args = ["--model", "llava15", "--shapes", "tiny", "--device", "cpu", "--methods", "dart"]
    args += ["--budgets", "64", "--repeats", "1", "--out", str(tmp_path), "--runtime", "compiled", "eager"]
    with pytest.raises(SystemExit):
        bench_latency.main([*args, "--llm-layers", "1"])  # compiled scales nothing
    rows = bench_latency.main(args)
    assert [(row["method"], row["runtime"], row["llm_tokens"]) for row in rows] == [
        ("none", "eager", 632),  # 56 text tokens + 576
        ("none", "compiled", 632),
        ("dart", "eager", 120),  # pruned inside the LLM: its kept sequence
        ("dart", "compiled", 120),
    ]
    native = {row["runtime"]: row for row in rows if row["method"] == "none"}
    for row in rows:
        assert row["speedup_ttft"] == pytest.approx(native[row["runtime"]]["ttft_ms"] / row["ttft_ms"])
    md = (tmp_path / "bench_latency_cpu_tiny.md").read_text()
    assert "runtime eager and compiled" in md.splitlines()[0]
    side = md.split("## Runtimes side by side (ms)")[1].splitlines()
    assert side[2].startswith("| method | frames | budget | encoder eager | encoder compiled | TTFT eager |")
    dart_row = next(line for line in side if line.startswith("| DART |")).split(" | ")
    ttft_eager, ttft_compiled = (float(dart_row[i]) for i in (5, 6))
    assert ttft_eager == pytest.approx(rows[2]["ttft_ms"], abs=0.05)
    assert ttft_compiled == pytest.approx(rows[3]["ttft_ms"], abs=0.05)
    assert (tmp_path / "bench_latency_cpu_tiny.tex").read_text().count(r"\begin{tabular}") == 2
    titles = [title for title, _ in latency_report.figure_panels(latency_models.MODELS["llava15"], rows, 64)]
    assert titles == ["64 visual tokens, eager", "64 visual tokens, compiled"]
    assert (tmp_path / "figures" / "fig3_ttft_cpu_tiny.png").exists()


def test_the_compiled_runtime_alone_has_files_of_its_own():
    spec = latency_models.MODELS["llava_video"]
    assert latency_report.output_stem(spec, "cuda", "real", ["compiled"]) == "bench_latency_video_cuda_compiled"
    assert latency_report.output_stem(spec, "cuda", "real", ["eager", "compiled"]) == "bench_latency_video_cuda"
    assert latency_report.output_stem(spec, "cpu", "tiny", ["eager"]) == "bench_latency_video_cpu_tiny"
