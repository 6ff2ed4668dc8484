"""Issue 25's GPU targets judged from the device check's time-to-first-token rows."""

from evoprune.harness.benchmarks.device_targets import LLAVA15, LLAVA_VIDEO, TARGETS, judge, markdown


def row(model, method, budget, runtime="compiled", **values):
    ms = {"prefill_ms": 10.0, "vision_encoder_ms": 50.0, "model_ttft_x": 1.0, "encoder_x": 1.0}
    return {"model": model, "method": method, "budget": budget, "runtime": runtime} | ms | values


def verdicts(rows):
    return {item["target"]: (item["value"], item["verdict"]) for item in judge(rows)}


def test_each_target_reads_its_own_run_and_bound():
    rows = [
        row(LLAVA15, "none", None, prefill_ms=20.0),
        row(LLAVA15, "fastervlm", 64, prefill_ms=9.0, model_ttft_x=1.3),
        row(LLAVA15, "evoprune", 64, encoder_x=0.9),
        row(LLAVA_VIDEO, "none", None, vision_encoder_ms=81.0),
        row(LLAVA_VIDEO, "evoprune", 64, encoder_x=1.8, model_ttft_x=2.4),
        row(LLAVA_VIDEO, "fastervlm", 64, model_ttft_x=0.99),
        row(LLAVA_VIDEO, "dart", 64, model_ttft_x=1.0),
    ]
    assert list(verdicts(rows).values()) == [
        (0.45, "met"),  # 9 ÷ 20 ≤ 0.5
        (1.3, "met"),
        (0.9, "missed"),
        (1.8, "met"),  # the bound itself meets an "at least"
        (2.4, "missed"),
        (0.99, "missed"),
        (1.0, "met"),
        (81.0, "missed"),  # ≤ 80 ms
    ]
    assert [target.text for target in TARGETS] == list(verdicts(rows))


def test_a_run_or_its_native_that_did_not_complete_is_not_measured_and_eager_rows_do_not_count():
    rows = [
        row(LLAVA15, "fastervlm", 64, prefill_ms=5.0, model_ttft_x=None),  # compiled Native failed
        row(LLAVA15, "none", None, runtime="eager"),
        row(LLAVA_VIDEO, "none", None, vision_encoder_ms=79.0),
    ]
    judged = verdicts(rows)
    assert judged["LLaVA-1.5 prefill at 64 visual tokens (FasterVLM) ÷ at 576 (Native)"] == (None, "not measured")
    assert judged["LLaVA-1.5 FasterVLM-64 model TTFT speedup over Native"] == (None, "not measured")
    assert judged["LLaVA-Video: Native SigLIP encoder on 64 frames, ms"] == (79.0, "met")
    assert [verdict for _, verdict in judged.values()].count("not measured") == 7


def test_the_table_says_which_way_each_bound_goes():
    lines = markdown(judge([row(LLAVA_VIDEO, "none", None, vision_encoder_ms=79.0)])).splitlines()
    assert lines[0] == "| target (compiled runtime) | wanted | value | verdict |"
    assert "| LLaVA-Video: Native SigLIP encoder on 64 frames, ms | ≤ 80 | 79.00 | met |" in lines
    assert "| LLaVA-Video 64 frames: EvoPrune-64 encoder speedup | ≥ 1.8 | – | not measured |" in lines
