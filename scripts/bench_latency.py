"""Time to first token per stage, native vs the six pruners (and the four baselines the paper left
out: ToMe, VisionZip, spatial pooling, random), measured beside the speedups a FLOP count predicts:
LLaVA-1.5-7B at 128/64/32 visual tokens (``--model llava15``), and LLaVA-Video-7B-Qwen2 at
1, 8 and 64 frames and 64/32/16 tokens per frame (``--model llava_video``: the paper's Figure 1, and the
source of Figure 3 when no real runs exist).

The models are built at their real size with random weights (`latency_models`: CLIP-L/336 + Vicuna-7B;
SigLIP-so400m/384 with 26 layers + the 2-layer projector + 2x2 pooling + Qwen2-7B with 4 KV heads), so
nothing is downloaded. Every measurement goes through the harness's own code: the pipeline's
`generate` (one new token, so decode does nothing) with its `StageTimer` (CUDA events on CUDA,
perf_counter on CPU), its `prepare_inputs`, `lay_out` and `prefill` stage functions, and the pruners that
`run.py model=<model> pruner=<method> budget=<budget>` builds, attached and detached as the runner does.
CDPruner's text model (CLIP-L's or SigLIP-so400m's text tower) has real shapes and random weights, fed by
the byte tokenizer (an upper bound on its cost).

What is measured where (``--encoder-frames`` E, ``--llm-layers`` L):
- The vision side (preprocess, vision_encoder, other = projector + pooling + newline layout, pruning)
  of every run: a `generate` on min(E, F) frames. When that is fewer than F frames (CPU default E = 1),
  vision_encoder and other are scaled linearly to F (every frame is encoded, projected and pooled on
  its own: linear in F), while preprocess (video decoding and resizing) and pruning (a selection may do
  per-sample work beside its per-frame work, e.g. CDPruner's text tower) are measured at F frames, the
  pruner selecting on the measured frames' tokens tiled to F (a `reduce` too: VisionZip's and pooling's
  work on the tower's tokens). CUDA default: E = F, nothing scaled.
- The LLM prefill at F frames: the pipeline's `prefill` stage on the visual sequence of F frames — the
  tiled tokens and the run's selection on them — laid out as the harness lays it out.
  Runs whose prefill is the same computation at the same length (every method but DART) share one
  timing per round. On CPU the LLM is built with max(L, K + 1) full-width layers: every run but DART
  runs L (default 1) of them, DART its K + 1 (K = its pruning layer, 2), and the prefill is scaled to
  the model's depth: measured prefill + missing layers x the mean time of the measured layers at the
  final sequence length (DART: K layers measured on the full prompt, the rest extrapolated from its
  layer K on the pruned one). CUDA default: all layers, nothing scaled.
Each round runs native, then every method x budget (interleaved), the vision side first, then the LLM
side per frame count; ``--warmup`` untimed rounds first; every time is a MEDIAN over the ``--repeats``
timed rounds (speedups: ratios of medians). Vision-side stages doing provably identical work are pooled
into one median over every run doing it (`pool_key`; ``--no-pool``: each run's own).

FLOP prediction (matmul FLOPs, 2 per multiply-add): encoder per layer 8nd^2 + 4n^2d + 16n'd^2 per frame
(`evoprune.harness.benchmarks.flops`), projector 2n(d_v d + d^2) per frame on the tokens it receives (before
pooling), LLM per layer 2S(2d^2 + 2d d_kv + 3d ff) + 4S^2 d over the S positions it runs (DART: K layers
at the full S). Selection and merging work are not counted.

``--runtime`` (`evoprune.harness.inference.runtime`; default ``eager compiled`` on CUDA, ``eager`` on CPU): with
``compiled`` the tower, the prefill and the decode step run through torch.compile, every run's graphs kept
side by side so the rounds still interleave, compiled in the warm-up rounds; it times the whole model (no
per-layer hooks in the graphs), so nothing may be scaled: the CUDA defaults, or ``--llm-layers`` all and
``--encoder-frames`` the largest frame count (on CPU that is hours at real shapes: use ``--shapes tiny``).
Both runtimes: each round runs every run eager and compiled, interleaved; the files hold both side by side
(every row its runtime; speedups against the same runtime's native; a second table puts each method's
runtimes in one row) and the figure a panel per runtime. The compiled runtime alone: files ending in
``_compiled``.

    python scripts/bench_latency.py [--model llava15|llava_video] [--device cpu|cuda] [--frames 1 8 64]
        [--budgets ...] [--repeats 5] [--warmup 1] [--encoder-frames E] [--llm-layers L] [--shapes real|tiny]
        [--runtime eager compiled]
    python scripts/bench_latency.py --model llava_video --render results/bench_latency_video_cpu.csv

Writes results/bench_latency[_video]_<device>[_tiny].{csv,md,tex} and the figure
(results/figures/fig3_ttft_<device>.png for LLaVA-1.5: one panel per budget; fig1_<device>.png for
LLaVA-Video: one panel per frame count at ``--figure-budget``), each atomically. Completed timed rounds
are kept in results/.bench_latency[_video]_<...>.partial.json: a killed run started again with the same
arguments and code resumes after its last completed round (warm-up rounds are run again).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_encoder import RESULTS  # noqa: E402

import evoprune  # noqa: E402
from evoprune.harness.benchmarks.flops import encoder_flops, llm_flops, projector_flops  # noqa: E402
from evoprune.harness.benchmarks.latency_models import (  # noqa: E402
    MODELS,
    ModelSpec,
    build_model,
    cdpruner_text_model,
    sample_visual,
)
from evoprune.harness.common.outputs import write_figure, write_json, write_text  # noqa: E402
from evoprune.harness.common.source import code_version  # noqa: E402
from evoprune.harness.common.text_tables import latex_table, markdown_table  # noqa: E402
from evoprune.harness.common.timing import STAGES, StageTimer  # noqa: E402
from evoprune.harness.inference.evoprune_pruner import EvoPrunePruner  # noqa: E402
from evoprune.harness.inference.pipeline import generate, lay_out, prefill, prepare_inputs  # noqa: E402
from evoprune.harness.inference.pruning import Pruner, VisualTokens, build_pruner  # noqa: E402
from evoprune.harness.inference.runtime import EAGER, RUNTIMES, Runtime, build_runtime, configured_compile  # noqa: E402
from evoprune.harness.models.loading import LoadedModel  # noqa: E402
from evoprune.harness.results.paper import METHOD_LABELS as LABELS  # noqa: E402

METHODS = ("fastervlm", "vispruner", "dart", "divprune", "cdpruner", "evoprune")
EXTRA_METHODS = ("tome", "visionzip", "pooling", "random")  # not in the paper
COMPILE = configured_compile()  # the harness's backend and modes per device type
# the pipeline's video_decode is counted in preprocess here (this benchmark's preprocess: decoding + resizing)
TTFT_STAGES = tuple(stage for stage in STAGES if stage not in ("decode", "video_decode"))


def preprocess_seconds(times: dict[str, float]) -> float:
    """This benchmark's preprocess from the pipeline's stage times: video decoding + preprocessing."""
    return times["video_decode"] + times["preprocess"]


PRE_LLM_STAGES = ("vision_encoder", "other", "pruning")
PER_FRAME_STAGES = ("vision_encoder", "other")  # each frame on its own: scaled linearly to F frames
TIMED = (*TTFT_STAGES, "prefill_measured", "pre_llm", "ttft")
SPEEDUPS = ("pre_llm", "prefill", "ttft")
COUNTS = ("visual_tokens", "newline_tokens", "llm_tokens")


# ---------------------------------------------------------------------------------------------
# FLOP model
# ---------------------------------------------------------------------------------------------


def scaled_prefill(prefill: float, layer_times: list[float], layer_tokens: list[int], total_layers: int) -> float:
    """Prefill time of the ``total_layers``-layer LLM from a run of the first ``len(layer_times)``:
    the measured prefill plus the missing layers, each timed as the mean of the measured layers that
    ran at the final sequence length (``layer_tokens[-1]``)."""
    missing = total_layers - len(layer_times)
    if missing < 0:
        raise ValueError(f"{len(layer_times)} layers measured but the model has {total_layers}")
    if missing == 0:
        return prefill
    tail = [t for t, n in zip(layer_times, layer_tokens, strict=True) if n == layer_tokens[-1]]
    return prefill + missing * statistics.mean(tail)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def compose_pruner(model_config: str, method: str, budget: int | None) -> Pruner:
    """The pruner `run.py model=<model_config> pruner=<method> budget=<budget>` would build."""
    from hydra import compose, initialize_config_dir

    overrides = [f"model={model_config}", f"pruner={method}", f"budget={'null' if budget is None else budget}"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return build_pruner(cfg.pruner, cfg.budget)


@dataclass
class Run:
    """One method at one budget: its pruner, its timed samples and token counts.

    ``vision[v]``: per-round stage seconds of `generate` on v frames; ``llm[F]``: per-round prefill
    seconds at F frames (LLM side); ``counts[F]``: visual / newline / LLM tokens at F frames.
    """

    method: str
    budget: int | None
    pruner: Pruner
    vision: dict[int, list[dict]] = field(default_factory=dict)
    llm: dict[int, list[dict]] = field(default_factory=dict)
    counts: dict[int, dict] = field(default_factory=dict)
    schedule: list[int] | None = None
    select: object = None  # the pruner's own `select` (`record_tokens` wraps the pruner's)
    reduce: object = None  # the pruner's own `reduce`
    tokens: VisualTokens | None = None  # what the latest vision-side generation gave its pruner's `select`
    tower_tokens: VisualTokens | None = None  # ... and its `reduce` (the tower's own tokens)
    runtime_name: str = "eager"  # one of RUNTIMES; `compile_runs` builds the compiled ones' runtime
    runtime: Runtime = EAGER

    @property
    def key(self) -> str:
        runtime = "" if self.runtime_name == "eager" else f"@{self.runtime_name}"
        return f"{self.method}-{self.budget or 'all'}{runtime}"

    @property
    def own_prefill(self) -> bool:
        """Whether the method changes the prefill (DART prunes inside the LLM)."""
        return type(self.pruner).prefill is not Pruner.prefill

    @property
    def merges_in_encoder(self) -> bool:
        """Whether the method changes the encoder itself (EvoPrune, ToMe: `evoprune.patch`)."""
        return isinstance(self.pruner, EvoPrunePruner)

    @property
    def reduces(self) -> bool:
        """Whether the method builds new tokens from the tower's (VisionZip, pooling): fewer reach the projector."""
        return type(self.pruner).reduce is not Pruner.reduce

    def attach(self, loaded: LoadedModel, text_model) -> None:
        """As the runner does before its samples; CDPruner gets the random-weight text model here
        instead of loading the real CLIP / SigLIP from disk."""
        if self.method == "cdpruner":
            self.pruner.use_image_text_model(*text_model)
        else:
            self.pruner.attach(loaded.model)
        if self.merges_in_encoder and self.schedule is None:
            self.schedule = evoprune.schedule_of(loaded.model.model.vision_tower)

    def detach(self, loaded: LoadedModel) -> None:
        if self.method != "cdpruner":
            self.pruner.detach(loaded.model)

    def record_tokens(self) -> None:
        """Keep the visual tokens of each vision-side generation (what the LLM side tiles to F frames)."""
        select, reduce = self.select, self.reduce = self.pruner.select, self.pruner.reduce

        def recorded_select(tokens):
            self.tokens = tokens
            return select(tokens)

        def recorded_reduce(tokens):
            self.tower_tokens = tokens
            return reduce(tokens)

        self.pruner.select, self.pruner.reduce = recorded_select, recorded_reduce


class LayerClock:
    """Token count of every decoder layer call and, when ``timed`` (the LLM is extrapolated from
    the measured layers), its start and end (CUDA events or perf_counter)."""

    def __init__(self, layers, device: torch.device, timed: bool):
        self.cuda, self.timed = device.type == "cuda", timed
        self.calls: list[list] = []
        self.handles = []
        for layer in layers:
            self.handles.append(layer.register_forward_pre_hook(self._start, with_kwargs=True))
            self.handles.append(layer.register_forward_hook(self._end, with_kwargs=True))

    def _now(self):
        if not self.timed:
            return 0.0
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _start(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self.calls.append([self._now(), None, int(hidden.shape[1])])

    def _end(self, module, args, kwargs, output):
        self.calls[-1][1] = self._now()

    def take(self) -> tuple[list[float], list[int]]:
        """Seconds and token counts of the calls since the last `take` (after the device synchronised)."""
        calls, self.calls = self.calls, []
        if self.cuda and self.timed:
            seconds = [start.elapsed_time(end) / 1000.0 for start, end, _ in calls]
        else:
            seconds = [end - start for start, end, _ in calls]
        return seconds, [tokens for _, _, tokens in calls]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@dataclass
class Bench:
    """The model under test, its input, and how deep its LLM runs per run."""

    spec: ModelSpec
    loaded: LoadedModel
    visual: object  # PIL image or video path
    text_model: tuple  # CDPruner's (space, model, tokenizer)
    clock: LayerClock | None  # None with --runtime compiled: nothing scaled, no per-layer hooks in the graphs
    total_layers: int
    llm_layers: int  # decoder layers run by every run but DART's
    dart_layer: int

    def depth(self, run: Run) -> int:
        return len(self.loaded.model.model.language_model.layers) if run.own_prefill else self.llm_layers

    def at_frames(self, frames: int) -> LoadedModel:
        if self.loaded.video is None:
            return self.loaded
        return dataclasses.replace(self.loaded, video=dataclasses.replace(self.loaded.video, frames=frames))

    def take_prefill(self, run: Run, measured: float) -> tuple[float, int]:
        """The prefill scaled to the model's depth, and the final sequence length, from the layer clock."""
        layer_times, layer_tokens = self.clock.take()
        if len(layer_times) != self.depth(run):
            raise RuntimeError(f"{run.key}: expected {self.depth(run)} decoder layer calls, saw {len(layer_times)}")
        return scaled_prefill(measured, layer_times, layer_tokens, self.total_layers), layer_tokens[-1]


@contextmanager
def decoder_depth(language_model, layers: int):
    """Run only the first ``layers`` decoder layers (transformers' Llama and Qwen2 models loop over
    ``layers[:config.num_hidden_layers]``; `Bench.take_prefill` checks the count of layer calls)."""
    config = language_model.config
    saved, config.num_hidden_layers = config.num_hidden_layers, layers
    try:
        yield
    finally:
        config.num_hidden_layers = saved


def time_vision_side(bench: Bench, run: Run, frames: int) -> tuple[dict, dict]:
    """One generation on ``frames`` frames: seconds per stage (prefill scaled) and token counts."""
    loaded = bench.at_frames(frames)
    run.attach(loaded, bench.text_model)
    try:
        with decoder_depth(loaded.model.model.language_model, bench.depth(run)):
            result = generate(
                loaded, run.pruner, bench.visual, bench.spec.question, max_new_tokens=1, until=[], runtime=run.runtime
            )
    finally:
        run.detach(loaded)
    times = {stage: result.times[stage] for stage in TTFT_STAGES}
    times["preprocess"] = preprocess_seconds(result.times)
    times["prefill_measured"] = times["prefill"]
    if bench.clock is None:  # the whole LLM ran: its final length from the counts (DART's is its kept sequence)
        pruned = result.visual_tokens_before - result.visual_tokens_after if run.own_prefill else 0
        llm_tokens = result.prompt_tokens - pruned
    else:
        times["prefill"], llm_tokens = bench.take_prefill(run, times["prefill"])
    counts = {"visual_tokens": result.visual_tokens_after, "newline_tokens": result.newline_tokens}
    return with_totals(times), counts | {"llm_tokens": llm_tokens}


def compile_runs(bench: Bench, runs: list[Run]) -> None:
    """Give every compiled run its runtime, all kept side by side: the runs interleave, so no run's graphs
    may be dropped for the next's (dynamo's guards tell the differently patched towers apart; `main`
    raises dynamo's recompile limit for them, and hitting it fails instead of running eagerly unsaid)."""
    torch._dynamo.reset()
    for run in runs:
        if run.runtime_name == "eager":
            continue
        run.attach(bench.loaded, bench.text_model)
        try:
            run.runtime = build_runtime(run.runtime_name, COMPILE, run.pruner, bench.loaded.device, reset=False)
        finally:
            run.detach(bench.loaded)


def time_preprocess(bench: Bench, frames: int) -> tuple[float, str]:
    """Seconds of the video_decode and preprocess stages together at ``frames`` frames (decoding, resizing,
    prompt), and the prompt."""
    timer = StageTimer(bench.loaded.device)
    _, prompt = prepare_inputs(bench.at_frames(frames), bench.visual, bench.spec.question, timer)
    return preprocess_seconds(timer.result()), prompt


def tile_frames(tensor: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """The first dimension (frames) repeated cyclically to ``frames``."""
    if tensor is None:
        return None
    reps = -(-frames // tensor.shape[0])
    return tensor.repeat(reps, *([1] * (tensor.ndim - 1)))[:frames]


def tiled_tokens(tokens: VisualTokens, frames: int) -> VisualTokens:
    """``tokens`` with every per-frame tensor tiled to ``frames`` frames."""
    per_frame = ("features", "projected", "layer_input", "cls_features")
    return dataclasses.replace(tokens, **{name: tile_frames(getattr(tokens, name), frames) for name in per_frame})


@torch.inference_mode()
def time_pruning(bench: Bench, run: Run, frames: int) -> tuple[float, torch.Tensor | None, torch.Tensor]:
    """The pruning stage on ``frames`` frames (the run's latest vision-side tokens tiled): seconds, the
    kept indices and the projected tokens. Measured, not scaled: a selection may do per-sample work
    (CDPruner's text tower) beside its per-frame work. A `reduce` runs on the tower's tokens tiled
    (its result is dropped: the projected tokens it led to are tiled instead, as the projector is
    per frame)."""
    tiled = tiled_tokens(run.tokens, frames)
    timer = StageTimer(bench.loaded.device)
    run.attach(bench.loaded, bench.text_model)
    try:
        with timer.stage("pruning"):
            if run.reduces:
                run.reduce(tiled_tokens(run.tower_tokens, frames))
            keep = run.select(tiled)
    finally:
        run.detach(bench.loaded)
    return timer.result()["pruning"], keep, tiled.projected


@torch.inference_mode()
def time_llm_side(bench: Bench, run: Run, frames: int, prompt: str, sequence, is_newline) -> tuple[dict, int, int]:
    """The prefill stage at ``frames`` frames: seconds (scaled, measured), final length, visual tokens kept."""
    timer = StageTimer(bench.loaded.device)
    with decoder_depth(bench.loaded.model.model.language_model, bench.depth(run)), timer.stage("prefill"):
        _, _, visual_tokens, _ = prefill(bench.loaded, run.pruner, prompt, sequence, is_newline, frames=frames)
    measured = timer.result()["prefill"]
    scaled, llm_tokens = bench.take_prefill(run, measured)
    return {"prefill": scaled, "prefill_measured": measured}, llm_tokens, int(visual_tokens)


def one_round(bench: Bench, runs: list[Run], plan: dict[int, int], warmup: bool = False) -> dict:
    """Every run once: the vision side per distinct vision frame count, then the LLM side per frame
    count measured on fewer frames than it has (a warm-up round: only the smallest such count, which
    runs the same code). Returns the round's record (`Journal`'s format)."""
    record = {"vision": {}, "preprocess": {}, "llm": {}}
    for vision_frames in sorted(set(plan.values())):
        record["vision"][vision_frames] = {run.key: time_vision_side(bench, run, vision_frames) for run in runs}
    llm_side = [frames for frames, vision_frames in plan.items() if vision_frames < frames]
    for frames in llm_side[:1] if warmup else llm_side:
        record["preprocess"][frames], prompt = time_preprocess(bench, frames)
        shared: dict[tuple, tuple] = {}  # every plain prefill of one length is one computation: timed once
        record["llm"][frames] = {}
        for run in runs:
            pruning, keep, projected = time_pruning(bench, run, frames)
            with torch.inference_mode():
                sequence, is_newline = lay_out(bench.loaded, projected, keep, run.tokens.on_grid)
            key = (run.key,) if run.own_prefill else ("llm", run.runtime_name, sequence.shape[0])
            if key not in shared:
                shared[key] = time_llm_side(bench, run, frames, prompt, sequence, is_newline)
            times, llm_tokens, kept = shared[key]
            newlines = int(is_newline.sum())
            visual = kept if run.own_prefill else sequence.shape[0] - newlines
            counts = {"visual_tokens": visual, "newline_tokens": newlines, "llm_tokens": llm_tokens}
            record["llm"][frames][run.key] = (times | {"pruning": pruning}, counts)
    return record


def add_round(runs: list[Run], record: dict) -> None:
    """File a round's record (fresh or read back from the journal) under each run."""
    for vision_frames, by_run in record["vision"].items():
        for run in runs:
            times, counts = by_run[run.key]
            run.vision.setdefault(int(vision_frames), []).append(times)
            run.counts.setdefault(int(vision_frames), counts)
    for frames, by_run in record["llm"].items():
        for run in runs:
            times, counts = by_run[run.key]
            run.llm.setdefault(int(frames), []).append(times | {"preprocess": record["preprocess"][frames]})
            run.counts[int(frames)] = counts


def bench_code_version() -> str:
    """The harness's code version and this benchmark's own sources: rounds of other code are not reused."""
    digest = hashlib.sha256(code_version().encode())
    for name in ("bench_latency.py", "bench_encoder.py", "bench_pruners.py"):
        digest.update((ROOT / "scripts" / name).read_bytes())
    return digest.hexdigest()[:16]


class Journal:
    """Completed timed rounds of one benchmark configuration, rewritten whole after each round."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity
        self.rounds: list[dict] = []
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("identity") == identity:
                self.rounds = saved["rounds"]
            else:
                print(f"{path}: rounds of other arguments or code; starting afresh", flush=True)

    def add(self, record: dict) -> None:
        self.rounds.append(record)
        write_json(self.path, {"identity": self.identity, "rounds": self.rounds})

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def _jsonable(record: dict) -> dict:
    """A round record with string keys, as it reads back from JSON."""
    return json.loads(json.dumps(record))


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


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


def with_totals(sample: dict) -> dict:
    pre_llm = sum(sample[stage] for stage in PRE_LLM_STAGES)
    return sample | {"pre_llm": pre_llm, "ttft": pre_llm + sample["preprocess"] + sample["prefill"]}


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


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_info(device: torch.device, dtype: torch.dtype) -> str:
    import transformers

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        where = f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return (
        f"{where}; {str(dtype).removeprefix('torch.')}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _layers(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def measurement_note(frames: int, vision_frames: int, llm_layers: int, total: int, dart_layer: int) -> str:
    """How the rows at ``frames`` frames were obtained (scaling stated)."""
    parts = []
    if vision_frames < frames:
        parts.append(
            f"vision side measured on {vision_frames} of {frames} frames, encoder and other (projector, pooling, "
            f"layout) scaled x{frames / vision_frames:g}; preprocess, pruning and the LLM prefill measured at "
            f"{frames} frames on the measured frames' tokens tiled"
        )
    if llm_layers == total:
        parts.append(f"LLM: all {total} decoder layers measured")
    else:
        parts.append(
            f"LLM: {llm_layers} of {total} full-width decoder layers measured (DART: {_layers(0, dart_layer - 1)} on "
            f"the full prompt, {_layers(dart_layer, dart_layer)} on the pruned one), the rest extrapolated from the "
            f"measured layers at the final sequence length"
        )
    return "; ".join(parts)


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def figure_title(spec: ModelSpec, rows: list[dict]) -> str:
    """The figure's heading from the rows alone (what `--render` has): model, machine, statistic, scaling."""
    last = rows[-1]
    head = (
        f"TTFT per stage, {spec.label} {'tiny test ' if last.get('shapes') == 'tiny' else ''}shapes, random weights, "
        f"{last['machine'].split(';')[0]}, runtime {' and '.join(runtime_runs(rows))}, median of {last['repeats']} "
        "interleaved rounds; labels: relative to native"
    )
    return "\n".join([head, f"{last['frames']} frames: {last['measurement']}"])  # `render_figure` wraps them


TABLE_MS = ("preprocess", "vision_encoder", "pruning", "other", "prefill", "pre_llm", "ttft")
TABLE_HEAD = ["method", "runtime", "frames", "budget", "LLM tokens", "preprocess", "encoder", "pruning", "other"]
TABLE_HEAD += ["prefill", "pre-LLM", "TTFT", "pre-LLM speedup (pred.)", "prefill speedup (pred.)"]
TABLE_HEAD += ["TTFT speedup (pred.)"]


def budget_cell(row: dict) -> str:
    return "all" if row["method"] == "none" else str(row["budget"])


def table_cells(row: dict) -> list[str]:
    cells = [LABELS[row["method"]], row["runtime"], str(row["frames"]), budget_cell(row), str(row["llm_tokens"])]
    cells += [f"{row[f'{name}_ms']:.1f}" for name in TABLE_MS]
    return cells + [f"{row[f'speedup_{n}']:.2f}x ({row[f'predicted_{n}']:.2f}x)" for n in SPEEDUPS]


def runtime_runs(rows: list[dict]) -> list[str]:
    """The runtimes the rows hold, in order."""
    return list(dict.fromkeys(row["runtime"] for row in rows))


def runtimes_table(rows: list[dict]) -> list[list[str]]:
    """Header and one row per method, frame count and budget with each runtime's encoder and TTFT (ms) and
    TTFT speedup over its own native side by side, the FLOP prediction, and the first runtime's TTFT ÷ each
    other's (what compiling gains)."""
    names = runtime_runs(rows)
    head = ["method", "frames", "budget", *(f"encoder {n}" for n in names), *(f"TTFT {n}" for n in names)]
    head += [*(f"TTFT speedup {n}" for n in names), "TTFT speedup (pred.)"]
    head += [f"{names[0]} / {n} TTFT" for n in names[1:]]
    table = [head]
    for start in range(0, len(rows), len(names)):
        side = rows[start : start + len(names)]
        cells = [LABELS[side[0]["method"]], str(side[0]["frames"]), budget_cell(side[0])]
        cells += [f"{row['vision_encoder_ms']:.1f}" for row in side] + [f"{row['ttft_ms']:.1f}" for row in side]
        cells += [f"{row['speedup_ttft']:.2f}x" for row in side] + [f"{side[0]['predicted_ttft']:.2f}x"]
        table.append(cells + [f"{side[0]['ttft_ms'] / row['ttft_ms']:.2f}x" for row in side[1:]])
    return table


def markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    parts = [f"# {title}", "", markdown_table([TABLE_HEAD, *map(table_cells, rows)], left=3), ""]
    if len(runtime_runs(rows)) > 1:
        parts += ["## Runtimes side by side (ms)", "", markdown_table(runtimes_table(rows), left=1), ""]
    return "\n".join(parts + [f"- {note}" for note in notes]) + "\n"


def latex(rows: list[dict], title: str) -> str:
    tables = [latex_table([TABLE_HEAD, *map(table_cells, rows)], left=3)]
    if len(runtime_runs(rows)) > 1:
        tables.append(latex_table(runtimes_table(rows), left=1))
    return f"% {title}\n" + "\n".join(tables)


def render_figure(panels: list[tuple[str, list[dict]]], path: Path, title: str) -> None:
    """One panel per (title, bars), native first: the model time (preprocess left out) stacked into
    visual encoder / other (projector, pooling, layout, post-encoder pruning) / LLM prefill, each bar
    labelled with its total relative to native; below, the same without the LLM (pre-LLM at its own scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = len(panels) * max(4.0, 0.45 * max(len(bars) for _, bars in panels))
    fig, axes = plt.subplots(2, len(panels), figsize=(width, 7.4), squeeze=False, height_ratios=(3, 2))
    title = "\n".join(textwrap.fill(line, int(width * 11)) for line in title.split("\n"))
    colours = ("#4C72B0", "#DD8452", "#55A868")
    for column, (panel_title, bars) in enumerate(panels):
        x = np.arange(len(bars))
        for top, ax in enumerate(axes[:, column]):
            encoder = np.array([row["vision_encoder_ms"] for row in bars])
            other = np.array([row["other_ms"] + row["pruning_ms"] for row in bars])
            prefill = np.array([row["prefill_ms"] for row in bars]) if top == 0 else np.zeros(len(bars))
            totals = encoder + other + prefill
            scale, unit = (1e-3, "s") if totals[0] >= 2000 else (1.0, "ms")
            ax.bar(x, encoder * scale, color=colours[0], label="visual encoder")
            ax.bar(
                x, other * scale, bottom=encoder * scale, color=colours[1], label="other (projector, pooling, pruning)"
            )
            if top == 0:
                ax.bar(x, prefill * scale, bottom=(encoder + other) * scale, color=colours[2], label="LLM prefill")
            for i, total in enumerate(totals):
                ax.annotate(
                    f"{total / totals[0]:.2f}",
                    (i, total * scale),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
            ax.set_xticks(x, [LABELS[row["method"]] for row in bars] if top else [], rotation=35, ha="right")
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            ax.margins(y=0.08)
            if column == 0:
                ax.set_ylabel(f"TTFT w/o preprocess ({unit})" if top == 0 else f"pre-LLM ({unit})")
        axes[0][column].set_title(panel_title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9, x=0.01, ha="left", y=0.99)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    write_figure(fig, path, dpi=150)


def figure_panels(spec: ModelSpec, rows: list[dict], figure_budget: int) -> list[tuple[str, list[dict]]]:
    """LLaVA-1.5: one panel per budget; LLaVA-Video: one panel per frame count at ``figure_budget``; with
    several runtimes, one panel per runtime beside each other (bars relative to that runtime's native)."""
    names = runtime_runs(rows)
    panels = []
    for panel_title, wanted in _panel_selectors(spec, rows, figure_budget):
        for name in names:
            bars = [r for r in rows if r["runtime"] == name and wanted(r)]
            panels.append((panel_title if len(names) == 1 else f"{panel_title}, {name}", bars))
    return panels


def _panel_selectors(spec: ModelSpec, rows: list[dict], figure_budget: int) -> list[tuple[str, object]]:
    """(title, which rows it draws: native first in row order) per panel."""
    if not spec.is_video:
        budgets = sorted({row["budget"] for row in rows if row["method"] != "none"}, reverse=True)
        return [(f"{b} visual tokens", lambda r, b=b: r["method"] == "none" or r["budget"] == b) for b in budgets]
    frame_counts = dict.fromkeys(row["frames"] for row in rows)
    return [
        (
            f"{frames} frame{'s' if frames > 1 else ''}, {figure_budget} tokens/frame",
            lambda r, f=frames: r["frames"] == f and (r["method"] == "none" or r["budget"] == figure_budget),
        )
        for frames in frame_counts
    ]


def read_rows(path: Path) -> list[dict]:
    """A written CSV's rows with numbers parsed back (files from before the runtime column: eager)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.setdefault("runtime", "eager")
        for key, value in row.items():
            if key not in ("method", "measurement", "machine", "shapes", "runtime"):
                number = float(value)
                row[key] = int(number) if number.is_integer() and not key.endswith(("_ms", "_gflops")) else number
    return rows


def output_stem(spec: ModelSpec, device: str, shapes: str, runtimes: list[str]) -> str:
    """The files' name: a measurement holding the eager runtime (alone or beside the compiled) has none
    of its own, the compiled runtime alone ends in ``_compiled``."""
    video = "_video" if spec.is_video else ""
    compiled = "" if "eager" in runtimes else "".join(f"_{name}" for name in runtimes)
    return f"bench_latency{video}_{device}{'_tiny' if shapes == 'tiny' else ''}{compiled}"


def figure_path(spec: ModelSpec, out: Path, stem: str) -> Path:
    suffix = stem.split("_", 3 if spec.is_video else 2)[-1]
    return out / "figures" / (f"fig1_{suffix}.png" if spec.is_video else f"fig3_ttft_{suffix}.png")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="llava15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="default: float16 on cuda, else float32"
    )
    parser.add_argument("--frames", type=int, nargs="+", help="frame counts (video; default 1 8 64)")
    parser.add_argument("--budgets", type=int, nargs="+", help="default: the paper's (128 64 32 / 64 32 16)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*METHODS, *EXTRA_METHODS],
        choices=[*METHODS, *EXTRA_METHODS],
        help="default: the paper's six and the four it left out",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed interleaved rounds (default 5; video on cpu 2, for time)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed interleaved rounds first")
    parser.add_argument("--no-pool", action="store_true", help="each run's own vision-side medians, no pooling")
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument(
        "--encoder-frames",
        type=int,
        default=None,
        help="frames the vision side runs on (default: 1 on cpu, all on cuda)",
    )
    parser.add_argument(
        "--llm-layers",
        type=int,
        default=None,
        help="decoder layers timed, DART's K + 1 (default: 1 on cpu, all on cuda)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        nargs="+",
        default=None,
        help="evoprune.harness.inference.runtime's, side by side when several (default: eager compiled on cuda, "
        "eager on cpu); compiled times the whole model (nothing scaled), alone into files ending in _compiled",
    )
    parser.add_argument("--figure-budget", type=int, default=None, help="video figure's budget (default: the largest)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for csv/md/tex (figure in <out>/figures)")
    parser.add_argument("--render", type=Path, help="redraw the figure from a written CSV (no timing)")
    args = parser.parse_args(argv)
    spec = MODELS[args.model]
    args.frames = args.frames or list(spec.frames)
    args.budgets = args.budgets or list(spec.budgets)
    if args.repeats is None:
        args.repeats = 2 if spec.is_video and args.device == "cpu" else 5
    on_cuda = torch.device(args.device).type == "cuda"
    chosen = args.runtime or (["eager", "compiled"] if on_cuda else ["eager"])
    args.runtime = [name for name in RUNTIMES if name in chosen]  # in RUNTIMES' order, each once
    args.figure_budget = args.figure_budget or max(args.budgets)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if not spec.is_video and args.frames != [1]:
        parser.error(f"--frames {args.frames}: {spec.label} reads one image (frames 1)")
    if min(args.frames) < 1 or (args.encoder_frames is not None and args.encoder_frames < 1):
        parser.error("--frames and --encoder-frames must be >= 1")
    if args.figure_budget not in args.budgets:
        parser.error(f"--figure-budget {args.figure_budget} is not one of --budgets {args.budgets}")
    return parser, args, spec


def main(argv: list[str] | None = None) -> list[dict]:
    parser, args, spec = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    if args.render:
        rows = read_rows(args.render)
        stem = output_stem(spec, device.type, args.shapes, runtime_runs(rows))
        panels = figure_panels(spec, rows, args.figure_budget)
        render_figure(panels, figure_path(spec, args.out, stem), figure_title(spec, rows))
        return rows

    stem = output_stem(spec, device.type, args.shapes, args.runtime)
    started = time.perf_counter()
    total_layers = spec.llm[args.shapes]["num_hidden_layers"]
    runs = []
    for name in args.runtime:  # each runtime's runs: native first, then every method x budget
        cells = [("none", None)] + [(m, b) for b in args.budgets for m in args.methods]
        runs += [Run(m, b, compose_pruner(spec.config, m, b), runtime_name=name) for m, b in cells]
    dart_layer = next((run.pruner.layer for run in runs if run.method == "dart"), 2)
    compiled = "compiled" in args.runtime
    scaled_default = device.type != "cuda" and not compiled  # the CPU default scales; compiled scales nothing
    llm_layers = args.llm_layers or (1 if scaled_default else total_layers)
    if not 1 <= llm_layers <= total_layers:
        parser.error(f"--llm-layers must be in [1, {total_layers}]")
    built_layers = max(llm_layers, dart_layer + 1) if llm_layers < total_layers else total_layers
    encoder_frames = args.encoder_frames or (1 if scaled_default else max(args.frames))
    plan = {frames: min(frames, encoder_frames) for frames in sorted(args.frames)}
    if compiled and (llm_layers < total_layers or encoder_frames < max(args.frames)):
        parser.error(
            f"--runtime compiled times the whole model, nothing scaled: leave --llm-layers and --encoder-frames "
            f"out or pass {total_layers} and {max(args.frames)}, got {llm_layers} and {encoder_frames}"
        )

    loaded = build_model(spec, args.shapes, built_layers, device, dtype)
    for run in runs:
        run.record_tokens()
    language_model = loaded.model.model.language_model
    clock = None if compiled else LayerClock(language_model.layers, device, timed=built_layers < total_layers)
    unrelated = ("out", "render", "repeats", "warmup", "figure_budget")  # rounds stay valid when only these change
    identity = {k: v for k, v in vars(args).items() if k not in unrelated}
    journal = Journal(args.out / f".{stem}.partial.json", identity | {"code": bench_code_version()})
    # compiled: room for every run's graphs side by side, and a failure rather than eager runs past the limit
    limits = {"recompile_limit": max(torch._dynamo.config.recompile_limit, 4 * len(runs))}
    limits["fail_on_recompile_limit_hit"] = True
    dynamo_limits = torch._dynamo.config.patch(**limits) if compiled else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as folder, dynamo_limits:
        bench = Bench(
            spec=spec,
            loaded=loaded,
            visual=sample_visual(spec, Path(folder)),
            text_model=cdpruner_text_model(loaded, args.shapes),
            clock=clock,
            total_layers=total_layers,
            llm_layers=llm_layers,
            dart_layer=dart_layer,
        )
        if compiled:
            compile_runs(bench, runs)
            args.warmup = max(args.warmup, *(run.runtime.warmup_generations for run in runs))
        previous = journal.rounds[: args.repeats]
        for record in previous:
            add_round(runs, record)
        done = len(previous)
        warmup = args.warmup if done < args.repeats else 0  # nothing left to time: no warm-up either
        print(
            f"{spec.label}, {args.shapes} shapes on {device} ({str(dtype).removeprefix('torch.')}): frames "
            f"{list(plan)} (vision side on {sorted(set(plan.values()))}), LLM {llm_layers}/{total_layers} layers "
            f"(DART {built_layers}); {len(runs)} runs per round, {args.warmup} warm-up + {args.repeats} timed rounds"
            + (f", {done} done before (resumed from {journal.path})" if done else "")
            + f" (built in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        try:
            for round_index in range(warmup + args.repeats - done):
                round_start = time.perf_counter()
                record = _jsonable(one_round(bench, runs, plan, warmup=round_index < warmup))
                if round_index >= warmup:
                    journal.add(record)
                    add_round(runs, record)
                kind = "warm-up" if round_index < warmup else "timed"
                print(f"round {round_index + 1} ({kind}): {time.perf_counter() - round_start:.1f} s", flush=True)
        finally:
            if clock is not None:
                clock.remove()

    rows = summarise(spec, args.shapes, runs, plan, dart_layer, loaded.num_visual_tokens, pool=not args.no_pool)
    elapsed = time.perf_counter() - started
    info = machine_info(device, dtype)
    notes_by_frames = {f: measurement_note(f, v, llm_layers, total_layers, dart_layer) for f, v in plan.items()}
    native = rows[0]
    text_tokens = native["llm_tokens"] - native["visual_tokens"] - native["newline_tokens"]
    title = (
        f"TTFT per stage, {spec.label} {'tiny test ' if args.shapes == 'tiny' else ''}shapes, random weights, "
        f"{device.type}, runtime {' and '.join(args.runtime)}, median of {args.repeats} interleaved rounds after "
        f"{args.warmup} warm-up (ms)"
    )
    notes = [f"{frames} frame{'s' if frames > 1 else ''}: {note}." for frames, note in notes_by_frames.items()]
    notes += [
        f"Prompt: the {spec.config} template with {text_tokens} text tokens at {min(plan)} frame(s) (word-level "
        "tokenizer, numbers split into digits); batch size 1, one new token. `budget` is per frame for video; "
        "LLM tokens = the final sequence length (text + visual + newlines).",
        "Each round runs native, then every method x budget (interleaved); every time is a MEDIAN over the timed "
        "rounds. "
        + (
            "Vision side pooled: stages doing provably identical work are one median over all the runs doing it "
            "(preprocess; the native encoder for every run but those merging inside it, EvoPrune and ToMe; the "
            "projector on every patch token for every run but those and the ones reducing the tower's tokens, "
            "VisionZip and pooling; a prefill at one length for every run but DART); each method's own work is "
            "from its own runs only. Per-run medians: "
            "own_vision_encoder_ms, own_prefill_ms in the CSV."
            if not args.no_pool
            else "Not pooled: each run's own vision-side medians."
        )
        + " LLM side: one timing per round for every plain prefill of the same length.",
        "Speedup = native median / method median at the same frame count; (pred.) = native FLOPs / method FLOPs "
        "(see the script's docstring; selection and merging work not counted).",
        "pre-LLM = vision_encoder + other (projector, pooling, newline layout) + pruning; TTFT = preprocess + "
        "pre-LLM + prefill. DART's selection runs inside prefill, EvoPrune's and ToMe's merging inside "
        "vision_encoder, VisionZip's and pooling's reduction in pruning.",
        f"Machine: {info}. Whole run (build + all rounds) {elapsed / 60:.1f} min.",
    ]
    if compiled:
        backend = next(run.runtime.backend for run in runs if run.runtime_name == "compiled")
        notes.append(
            f"Runtime compiled: torch.compile ({backend}) of the tower, the prefill and the decode step "
            "(evoprune/harness/inference/runtime.py), every run's graphs kept side by side; compiled in the warm-up "
            "rounds."
            + (
                " Eager and compiled runs interleave in every round; speedups compare runs of one runtime."
                if len(args.runtime) > 1
                else ""
            )
        )
    table = markdown(rows, title, notes)
    print(table)
    for row in rows:
        row |= {"repeats": args.repeats, "warmup": args.warmup, "shapes": args.shapes}
        row |= {"measurement": notes_by_frames[row["frames"]], "machine": info}
    write_csv(args.out / f"{stem}.csv", rows)
    write_text(args.out / f"{stem}.md", table)
    write_text(args.out / f"{stem}.tex", latex(rows, title))
    panels = figure_panels(spec, rows, args.figure_budget)
    render_figure(panels, figure_path(spec, args.out, stem), figure_title(spec, rows))
    journal.finish()
    return rows


if __name__ == "__main__":
    main()
