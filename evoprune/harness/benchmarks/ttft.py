"""Time to first token of the real-size models, eager and compiled: the device check's third step
(``scripts/ttft_check.py`` is its entry point).

The plan: LLaVA-1.5-7B on one image (Native, FasterVLM and EvoPrune at 64 tokens) and LLaVA-Video-7B-Qwen2 on
64 frames (Native, EvoPrune, FasterVLM and DART at 64 tokens per frame), random weights at the real shapes
(`latency_models`; ``tiny``: the same plan on tiny widths, 4 frames), every sample through the harness's
`generate` with one new token, under each runtime (`evoprune.harness.inference.runtime`). Eager: one warm-up
generation per run, then the rounds, the runs interleaved (native, pruned, …, native, …). Compiled: each run on
its own (building a runtime resets dynamo), its warm-up compiling, then its rounds. Every time is the MEDIAN over
the rounds; speedups are Native's median ÷ the run's, same runtime. Model TTFT = vision encoder + other +
pruning + prefill (no video decoding or preprocessing).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from evoprune.harness.benchmarks.latency_models import MODELS, build_model, sample_visual
from evoprune.harness.benchmarks.machine import device_label
from evoprune.harness.benchmarks.parts import Parts
from evoprune.harness.common.outputs import write_json, write_text
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.common.text_tables import markdown_table
from evoprune.harness.inference.pipeline import generate
from evoprune.harness.inference.pruning import Pruner, build_pruner
from evoprune.harness.inference.runtime import WARMUP_NEW_TOKENS, build_runtime, configured_compile
from evoprune.harness.results.report import GROUPS

# model → (frames per shapes, runs as (pruner config, budget))
PLAN = {
    "llava15": ({"real": 1, "tiny": 1}, [("none", None), ("fastervlm", 64), ("evoprune", 64)]),
    "llava_video": (
        {"real": 64, "tiny": 4},
        [("none", None), ("evoprune", 64), ("fastervlm", 64), ("dart", 64)],
    ),
}
STAGES = ("vision_encoder", "other", "pruning", "prefill", "model_ttft", "ttft")
COMPILE = configured_compile()  # the harness's backend and modes per device type


def _pruner(name: str, budget: int | None):
    return build_pruner(OmegaConf.load(CONFIG_DIR / "pruner" / f"{name}.yaml"), budget)


def _timed(loaded, pruner, visual, question: str, runtime, warm_up: bool = False) -> dict[str, float]:
    new_tokens = WARMUP_NEW_TOKENS if warm_up else 1
    result = generate(
        loaded, pruner, visual, question, new_tokens, [], "ttft-check", runtime, min_new_tokens=new_tokens
    )
    times = dict(result.times)
    times["model_ttft"] = sum(times[stage] for stage in GROUPS["model_ttft"])
    return times | {"visual_tokens": result.visual_tokens_after}


def _run_name(name: str, budget: int | None) -> str:
    return name if budget is None else f"{name}-{budget}"


def time_runs(loaded, visual, question: str, runs: list, runtime_name: str, repeats: int, parts: Parts, label: str):
    """Per run that completed: warm-up seconds and the rounds' stage times (the order: the module docstring).

    Eager: the runs interleaved, as one part of ``parts``; compiled: one part per run. Speedups are Native's (the
    first run's) time ÷ the run's, None where Native did not complete.
    """
    pruners: dict[int, Pruner] = {}  # built inside the parts: a config that fails to build fails its part
    samples: list[list[dict]] = [[] for _ in runs]
    warmup = [0.0] * len(runs)

    def pruner_of(index: int) -> Pruner:
        if index not in pruners:
            pruners[index] = _pruner(*runs[index])
        return pruners[index]

    def one(index: int, warm_up: bool, runtime=None) -> None:
        pruner = pruner_of(index)
        pruner.attach(loaded.model)
        try:
            runtime = runtime or build_runtime(runtime_name, COMPILE, pruner, loaded.device)
            start = time.perf_counter()
            times = _timed(loaded, pruner, visual, question, runtime, warm_up)
            if warm_up:
                warmup[index] += time.perf_counter() - start
            else:
                samples[index].append(times)
        finally:
            pruner.detach(loaded.model)

    def interleaved() -> bool:
        for index in range(len(runs)):
            one(index, warm_up=True)
        for _ in range(repeats):
            for index in range(len(runs)):
                one(index, warm_up=False)
        return True

    def compiled(index: int) -> bool:
        pruner = pruner_of(index)
        pruner.attach(loaded.model)
        runtime = build_runtime(runtime_name, COMPILE, pruner, loaded.device)
        pruner.detach(loaded.model)
        for warm_up in [True] * max(1, runtime.warmup_generations) + [False] * repeats:
            one(index, warm_up, runtime)
        return True

    names = [_run_name(*run) for run in runs]
    if runtime_name == "eager":
        completed = [parts.run(f"{label} eager: {', '.join(names)}", interleaved) is True] * len(runs)
    else:
        completed = [
            parts.run(f"{label} compiled: {name}", lambda i=i: compiled(i)) is True for i, name in enumerate(names)
        ]
    rows = []
    for (name, budget), own, seconds, done in zip(runs, samples, warmup, completed, strict=True):
        if not done:
            continue
        medians = {stage: statistics.median(s[stage] for s in own) * 1000 for stage in STAGES}
        rows.append(
            {
                "method": name,
                "budget": budget,
                "runtime": runtime_name,
                "warmup_s": seconds,
                "visual_tokens": own[0]["visual_tokens"],
                **{f"{stage}_ms": value for stage, value in medians.items()},
            }
        )
    native = rows[0] if completed[0] else None
    for row in rows:
        for key, stage in (("encoder_x", "vision_encoder_ms"), ("model_ttft_x", "model_ttft_ms")):
            row[key] = None if native is None else native[stage] / row[stage]
    return rows


def render(device_name: str, rows: list[dict], repeats: int) -> str:
    head = ["model", "frames", "runtime", "method", "budget", "tokens", "warm-up s", "encoder ms", "other ms"]
    head += ["pruning ms", "prefill ms", "model TTFT ms", "TTFT ms", "encoder ×", "model TTFT ×"]
    table = [head]
    for row in rows:
        table.append(
            [
                row["model"],
                str(row["frames"]),
                row["runtime"],
                row["method"],
                "all" if row["budget"] is None else str(row["budget"]),
                str(row["visual_tokens"]),
                f"{row['warmup_s']:.1f}",
                *(f"{row[f'{stage}_ms']:.2f}" for stage in STAGES),
                *("–" if row[key] is None else f"{row[key]:.2f}" for key in ("encoder_x", "model_ttft_x")),
            ]
        )
    return "\n".join(
        [
            f"## Time to first token on {device_name}: median of {repeats} rounds; × = Native's ÷ the run's",
            "",
            "Random weights at the models' shapes; model TTFT = encoder + other + pruning + prefill; TTFT adds "
            "video decoding and preprocessing; warm-up s = the untimed warm-up (compilation included).",
            "",
            markdown_table(table, left=5),
        ]
    )


def result_stem(device_type: str, shapes: str) -> str:
    """File stem of the check's results: ``ttft_check_<device>[_tiny]``."""
    return f"ttft_check_{device_type}" + ("_tiny" if shapes == "tiny" else "")


def check_ttft(
    shapes: str,
    device: str | torch.device,
    models: list[str],
    runtimes: list[str],
    repeats: int,
    out: Path,
    clip: Path | None = None,
    parts: Parts | None = None,
) -> list[dict]:
    """Time `PLAN`'s runs of each model under each runtime; write <out>/`result_stem`.{json,md} after each model and
    runtime (atomically), print the table and return its rows. ``clip``: the video to read (default: `sample_visual`'s).
    Building a model, and each runtime's runs, are parts of ``parts`` (`Parts`: a part that fails or comes after its
    time limit is recorded there, and the rest still runs)."""
    parts = parts if parts is not None else Parts()
    device = torch.device(device)
    device_name = device_label(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    stem = result_stem(device.type, shapes)
    meta = {"device": device_name, "torch": torch.__version__, "dtype": str(dtype), "repeats": repeats}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            spec = MODELS[model]
            frames_by_shapes, runs = PLAN[model]
            frames = frames_by_shapes[shapes]

            def build(spec=spec, frames=frames):
                loaded = build_model(spec, shapes, spec.llm[shapes]["num_hidden_layers"], device, dtype)
                if loaded.video is not None:
                    loaded = dataclasses.replace(loaded, video=dataclasses.replace(loaded.video, frames=frames))
                visual = clip if spec.is_video and clip else sample_visual(spec, Path(folder))
                return loaded, visual

            built = parts.run(f"{spec.label}: build", build)
            if built is None:
                continue
            loaded, visual = built
            for runtime_name in runtimes:
                label = f"{spec.label} {frames} frame(s)"
                timed = time_runs(loaded, visual, spec.question, runs, runtime_name, repeats, parts, label)
                rows += [{"model": spec.label, "frames": frames} | row for row in timed]
                write_json(out / f"{stem}.json", {"meta": meta, "rows": rows})
                write_text(out / f"{stem}.md", render(device_name, rows, repeats) + "\n")
            del loaded, built
    print(render(device_name, rows, repeats))
    return rows
