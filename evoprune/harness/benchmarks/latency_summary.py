"""The timed rounds summarised: median seconds per stage of every run (stages doing provably identical work
pooled across runs), token counts, FLOPs, and the measured and FLOP-predicted speedups against native."""

from __future__ import annotations

import statistics

from evoprune.harness.benchmarks.flops import encoder_flops, llm_flops, projector_flops
from evoprune.harness.benchmarks.latency_models import ModelSpec
from evoprune.harness.benchmarks.latency_runs import (
    PER_FRAME_STAGES,
    PRE_LLM_STAGES,
    SPEEDUPS,
    TIMED,
    TTFT_STAGES,
    Run,
    with_totals,
)


def pool_key(run: Run, stage: str, llm_tokens: int):
    """Runs doing provably the same work in ``stage`` share a key (their samples are pooled):
    preprocess (same input and prompt) across all runs; the native encoder across every run but those
    merging inside it (EvoPrune, ToMe); the projector on all patch tokens across those and the runs
    reducing the tower's tokens (VisionZip, pooling); the LLM prefill across runs feeding it the same
    number of tokens, except DART's (its prefill holds its selection and two sequence lengths).
    Everything else (pruning, merged encoders, DART's prefill) is the run's own. Runs of different
    runtimes never share a key (the same stage compiled is other work)."""
    if stage == "preprocess":
        shared = "all"
    elif stage == "vision_encoder" and not run.merges_in_encoder:
        shared = "native"
    elif stage == "other" and not (run.merges_in_encoder or run.reduces):
        shared = "native"
    elif stage == "prefill" and not run.own_prefill:
        shared = ("llm", llm_tokens)
    else:
        shared = (run.method, run.budget)
    return run.runtime_name, shared


def stage_medians(runs: list[Run], samples: list[list[dict]], tokens: list[int], pool: bool) -> list[dict]:
    """Median seconds per stage of each run's ``samples`` (pooled by `pool_key` when ``pool``); pre-LLM
    and TTFT are the sums of their stages' medians when pooled, the medians of the per-round sums otherwise."""
    pooled: dict = {}
    if pool:
        for run, own, llm_tokens in zip(runs, samples, tokens, strict=True):
            for stage in TTFT_STAGES:
                pooled.setdefault((stage, pool_key(run, stage, llm_tokens)), []).extend(s[stage] for s in own)
    result = []
    for run, own, llm_tokens in zip(runs, samples, tokens, strict=True):
        medians = {name: statistics.median(s[name] for s in own) for name in TIMED}
        medians["own_vision_encoder"], medians["own_prefill"] = medians["vision_encoder"], medians["prefill"]
        if pool:
            medians |= {
                stage: statistics.median(pooled[stage, pool_key(run, stage, llm_tokens)]) for stage in TTFT_STAGES
            }
            medians["pre_llm"] = sum(medians[stage] for stage in PRE_LLM_STAGES)
            medians["ttft"] = sum(medians[stage] for stage in TTFT_STAGES)
        result.append(medians)
    return result


def frame_medians(runs: list[Run], frames: int, vision_frames: int, pool: bool) -> list[dict]:
    """Median seconds per stage of every run at ``frames`` frames: the vision side measured on
    ``vision_frames`` frames (scaled by frames / vision_frames), the LLM side at ``frames``."""
    vision = stage_medians(
        runs,
        [run.vision[vision_frames] for run in runs],
        [run.counts[vision_frames]["llm_tokens"] for run in runs],
        pool,
    )
    if vision_frames == frames:
        return vision
    scale = frames / vision_frames
    result = []
    for run, seen in zip(runs, vision, strict=True):
        medians = {stage: seen[stage] * scale for stage in PER_FRAME_STAGES}
        medians["own_vision_encoder"] = seen["own_vision_encoder"] * scale
        llm = run.llm[frames]
        for name in ("preprocess", "pruning", "prefill", "prefill_measured"):
            medians[name] = statistics.median(s[name] for s in llm)
        medians["own_prefill"] = medians["prefill"]
        result.append(with_totals(medians))
    return result


def summarise(
    spec: ModelSpec, shapes: str, runs: list[Run], plan: dict[int, int], dart_layer: int, grid: int, pool: bool
) -> list[dict]:
    """One row per frame count, run and runtime, each run's runtimes side by side: median ms per stage,
    token counts, FLOPs, measured and FLOP-predicted speedups vs native of the same runtime at the same
    frame count."""
    by_runtime: dict[str, list[Run]] = {}
    for run in runs:
        by_runtime.setdefault(run.runtime_name, []).append(run)
    blocks = [summarise_runtime(spec, shapes, group, plan, dart_layer, grid, pool) for group in by_runtime.values()]
    return [row for side_by_side in zip(*blocks, strict=True) for row in side_by_side]


def summarise_runtime(
    spec: ModelSpec, shapes: str, runs: list[Run], plan: dict[int, int], dart_layer: int, grid: int, pool: bool
) -> list[dict]:
    """`summarise` for the runs of one runtime, native first."""
    vision, llm = spec.vision[shapes], spec.llm[shapes]
    width, mlp_width, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    prefix = 0 if spec.is_video else 1  # CLIP's [CLS] runs through the encoder
    d, ff, n_layers = llm["hidden_size"], llm["intermediate_size"], llm["num_hidden_layers"]
    kv_width = d * llm["num_key_value_heads"] // llm["num_attention_heads"]
    rows = []
    for frames, vision_frames in plan.items():
        native_tokens = runs[0].counts[frames]["llm_tokens"]
        block = []
        for run, medians in zip(runs, frame_medians(runs, frames, vision_frames, pool), strict=True):
            counts = run.counts[frames]
            row = {"frames": frames, "method": run.method, "runtime": run.runtime_name, "budget": run.budget or grid}
            row |= counts | {f"{name}_ms": seconds * 1e3 for name, seconds in medians.items()}
            tokens_out = run.pruner.tokens_per_frame if run.merges_in_encoder or run.reduces else patches
            encoder = encoder_flops(run.schedule or [0] * layers, patches, prefix, width, mlp_width)
            pre = frames * (encoder + projector_flops(tokens_out, width, d))
            if run.own_prefill:
                split = dict(pruned_seq=counts["llm_tokens"], split=dart_layer)
                prefill_flops = llm_flops(native_tokens, d, ff, n_layers, kv_width=kv_width, **split)
            else:
                prefill_flops = llm_flops(counts["llm_tokens"], d, ff, n_layers, kv_width=kv_width)
            row |= {"pre_llm_gflops": pre / 1e9, "prefill_gflops": prefill_flops / 1e9}
            row["ttft_gflops"] = row["pre_llm_gflops"] + row["prefill_gflops"]
            block.append(row)
        for row in block:
            for name in SPEEDUPS:
                row[f"speedup_{name}"] = block[0][f"{name}_ms"] / row[f"{name}_ms"]
                row[f"predicted_{name}"] = block[0][f"{name}_gflops"] / row[f"{name}_gflops"]
        rows += block
    return rows
