"""Issue 25's latency targets (compiled runtime, an H100), judged from the device check's time-to-first-token rows.

Each target reads one run's compiled row of one model ("none" is Native; others are "<method>-<budget>") and is
met, missed, or not measured (the run, or Native where the value is relative to it, did not complete). They are
judged the same on any device and shapes; the heading of the check's report names both, and only an H100 at the
real shapes is what the issue asks about. Needs the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoprune.harness.common.text_tables import markdown_table

LLAVA15, LLAVA_VIDEO = "LLaVA-1.5-7B", "LLaVA-Video-7B-Qwen2"


@dataclass(frozen=True)
class Target:
    text: str
    model: str  # the rows' "model" label
    run: str
    field: str  # a column of the TTFT rows
    bound: float
    at_most: bool  # met when value <= bound (else when value >= bound)
    per_native: bool = False  # value = the run's field ÷ Native's

    def value(self, runs: dict[str, dict]) -> float | None:
        row, native = runs.get(self.run), runs.get("none")
        if row is None or row[self.field] is None or (self.per_native and native is None):
            return None
        return row[self.field] / native[self.field] if self.per_native else row[self.field]


TARGETS = (
    Target("LLaVA-1.5 prefill at 64 visual tokens (FasterVLM) ÷ at 576 (Native)", LLAVA15, "fastervlm-64",
           "prefill_ms", 0.5, at_most=True, per_native=True),
    Target("LLaVA-1.5 FasterVLM-64 model TTFT speedup over Native", LLAVA15, "fastervlm-64", "model_ttft_x", 1.0,
           at_most=False),
    Target("LLaVA-1.5 EvoPrune-64 encoder speedup over Native (one image)", LLAVA15, "evoprune-64", "encoder_x", 1.0,
           at_most=False),
    Target("LLaVA-Video 64 frames: EvoPrune-64 encoder speedup", LLAVA_VIDEO, "evoprune-64", "encoder_x", 1.8,
           at_most=False),
    Target("LLaVA-Video 64 frames: EvoPrune-64 model TTFT speedup", LLAVA_VIDEO, "evoprune-64", "model_ttft_x", 2.5,
           at_most=False),
    Target("LLaVA-Video 64 frames: FasterVLM-64 model TTFT speedup", LLAVA_VIDEO, "fastervlm-64", "model_ttft_x", 1.0,
           at_most=False),
    Target("LLaVA-Video 64 frames: DART-64 model TTFT speedup", LLAVA_VIDEO, "dart-64", "model_ttft_x", 1.0,
           at_most=False),
    Target("LLaVA-Video: Native SigLIP encoder on 64 frames, ms", LLAVA_VIDEO, "none", "vision_encoder_ms", 80.0,
           at_most=True),
)  # fmt: skip


def judge(rows: list[dict], targets: tuple[Target, ...] = TARGETS) -> list[dict]:
    """Per target: its value from the compiled ``rows`` (`ttft.check_ttft`'s) and the verdict."""
    runs: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["runtime"] == "compiled":
            name = row["method"] if row["budget"] is None else f"{row['method']}-{row['budget']}"
            runs.setdefault(row["model"], {})[name] = row
    judged = []
    for target in targets:
        value = target.value(runs.get(target.model, {}))
        if value is None:
            verdict = "not measured"
        else:
            verdict = "met" if (value <= target.bound if target.at_most else value >= target.bound) else "missed"
        judged.append({"target": target.text, "value": value, "bound": target.bound, "at_most": target.at_most,
                       "verdict": verdict})  # fmt: skip
    return judged


def markdown(judged: list[dict]) -> str:
    rows = [["target (compiled runtime)", "wanted", "value", "verdict"]]
    for item in judged:
        wanted = f"{'≤' if item['at_most'] else '≥'} {item['bound']:g}"
        value = "–" if item["value"] is None else f"{item['value']:.2f}"
        rows.append([item["target"], wanted, value, item["verdict"]])
    return markdown_table(rows, left=1)
