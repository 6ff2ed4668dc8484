"""Latency summaries and the one-screen run summary.

The paper's latency columns group the stages: pre-LLM = vision encoder + other (projector, pooling,
newline layout) + post-encoder pruning (CPU preprocessing and video decoding are left out: no pruner
changes them), LLM = prefill + decode, overall = the whole sample, preprocessing included. TTFT counts
every stage before the first token; model TTFT leaves out video decoding and preprocessing. Medians are
over samples without errors.
"""

from __future__ import annotations

import statistics

from evoprune.harness.common.timing import STAGES

GROUPS = {
    "pre_llm": ("vision_encoder", "other", "pruning"),
    "llm": ("prefill", "decode"),
    # TTFT without the CPU's video decoding and preprocessing: what a pruner can change
    "model_ttft": ("vision_encoder", "other", "pruning", "prefill"),
}
SUMMARY_KEYS = (*STAGES, "ttft", "total", *GROUPS)


def _with_groups(times: dict[str, float]) -> dict[str, float]:
    grouped = {stage: 0.0 for stage in STAGES} | times  # records from before a stage existed lack it
    for group, stages in GROUPS.items():
        grouped[group] = sum(grouped[stage] for stage in stages)
    return grouped


def latency_summary(records: list[dict]) -> dict:
    """Median seconds per stage and group over timed records, overall and per task."""

    def medians(rows):
        timed = [_with_groups(row["times"]) for row in rows if row["error"] is None]
        if not timed:
            return {"samples": 0}
        result = {key: statistics.median(t[key] for t in timed) for key in SUMMARY_KEYS}
        result["samples"] = len(timed)
        ok = [r for r in rows if r["error"] is None]
        result["visual_tokens_after"] = statistics.median(r["visual_tokens_after"] for r in ok)
        if all(r.get("newline_tokens") is not None for r in ok):  # records from before video support lack them
            result["newline_tokens"] = statistics.median(r["newline_tokens"] for r in ok)
            result["frames"] = statistics.median(r["frames"] for r in ok)
        return result

    tasks = sorted({row["task"] for row in records})
    return {
        "unit": "seconds (median per sample)",
        "overall": medians(records),
        "per_task": {task: medians([r for r in records if r["task"] == task]) for task in tasks},
    }


def relative_latency(summary: dict, native: dict) -> dict[str, float]:
    """This run's overall medians divided by the native run's, per stage and group."""
    ours, base = summary["overall"], native["overall"]
    return {key: ours[key] / base[key] for key in SUMMARY_KEYS if key in ours and base.get(key)}


def _format_metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_summary(title: str, metrics: dict, latency: dict, relative: dict | None, relative_note: str | None) -> str:
    """A plain-text table: per-task scores and errors, derived (per-sample) scores, then per-stage latency."""
    width = max([18, *(len(task) for task in metrics["tasks"])])
    lines = [title, "", f"{'task':<{width}} {'samples':>7} {'errors':>6}  metrics"]
    for task, entry in metrics["tasks"].items():
        shown = ", ".join(f"{name}={_format_metric(v)}" for name, v in entry["metrics"].items())
        lines.append(f"{task:<{width}} {entry['samples']:>7} {entry['errors']:>6}  {shown}")
    lines.append(f"{'all':<{width}} {metrics['samples']:>7} {metrics['errors']:>6}")
    derived = metrics.get("derived") or {}
    if derived:
        lines += ["", "scores from the per-sample records (every sample counts; errors and unparsable answers wrong)"]
        lines.append(f"{'score':<26} {'value':>7} {'samples':>7} {'errors':>6} {'unparsable':>10}")
        for name, entry in derived.items():
            value = "—" if entry["value"] is None else f"{entry['value']:.2f}"
            lines.append(f"{name:<26} {value:>7} {entry['samples']:>7} {entry['errors']:>6} {entry['unparsable']:>10}")
    overall = latency["overall"]
    lines += ["", f"latency over {overall['samples']} timed samples (median ms per sample)"]
    header = f"{'stage':<16} {'ms':>10}"
    lines.append(header + (f" {'speedup':>10}" if relative else ""))
    for key in SUMMARY_KEYS:
        if key not in overall:
            continue
        row = f"{key:<16} {overall[key] * 1000:>10.2f}"
        if relative and key in relative:
            row += f" {1 / relative[key]:>9.2f}x" if relative[key] else f" {'—':>10}"
        lines.append(row)
    if "visual_tokens_after" in overall:
        lines.append(f"{'visual tokens':<16} {overall['visual_tokens_after']:>10g}")
    if overall.get("newline_tokens"):
        lines.append(f"{'newline tokens':<16} {overall['newline_tokens']:>10g}  (not counted as visual tokens)")
        lines.append(f"{'frames':<16} {overall['frames']:>10g}")
    if relative is None:
        lines.append(f"(no speedups: {relative_note})")
    else:
        lines.append("speedup = the native run's median ÷ this run's (above 1 = faster)")
    return "\n".join(lines)
