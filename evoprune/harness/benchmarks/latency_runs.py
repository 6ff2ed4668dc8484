"""Time to first token stage by stage, in interleaved rounds: each method at each budget a `Run` (its pruner,
attached and detached as the runner does, and its timed samples), the model under test a `Bench`, and
`one_round` timing every run once through the harness's own pipeline stages. What is measured where, and what
is scaled, is in `evoprune.harness.benchmarks.latency`'s docstring."""

from __future__ import annotations

import dataclasses
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import evoprune
from evoprune.harness.benchmarks.latency_models import ModelSpec
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.common.timing import STAGES, StageTimer
from evoprune.harness.inference.evoprune_pruner import EvoPrunePruner
from evoprune.harness.inference.pipeline import generate, lay_out, prefill, prepare_inputs
from evoprune.harness.inference.pruning import Pruner, VisualTokens, build_pruner
from evoprune.harness.inference.runtime import EAGER, Runtime, build_runtime, configured_compile
from evoprune.harness.models.loading import LoadedModel

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


def compose_pruner(model_config: str, method: str, budget: int | None) -> Pruner:
    """The pruner `run.py model=<model_config> pruner=<method> budget=<budget>` would build."""
    from hydra import compose, initialize_config_dir

    overrides = [f"model={model_config}", f"pruner={method}", f"budget={'null' if budget is None else budget}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
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


def with_totals(sample: dict) -> dict:
    pre_llm = sum(sample[stage] for stage in PRE_LLM_STAGES)
    return sample | {"pre_llm": pre_llm, "ttft": pre_llm + sample["preprocess"] + sample["prefill"]}


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
