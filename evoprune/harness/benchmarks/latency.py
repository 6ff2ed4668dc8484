"""The latency benchmark end to end (``scripts/bench_latency.py`` parses its arguments into a `LatencyBench`):
the runs built as `run.py` builds their pruners, the model at its real size with random weights, warm-up and
timed interleaved rounds journalled as they complete, the summary, and its files.

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evoprune.harness.benchmarks.latency_journal import Journal, jsonable
from evoprune.harness.benchmarks.latency_models import MODELS, build_model, cdpruner_text_model, sample_visual
from evoprune.harness.benchmarks.latency_report import (
    figure_panels,
    figure_path,
    figure_title,
    latex,
    markdown,
    measurement_note,
    output_stem,
    read_rows,
    render_figure,
    runtime_runs,
    write_csv,
)
from evoprune.harness.benchmarks.latency_runs import (
    EXTRA_METHODS,
    METHODS,
    Bench,
    LayerClock,
    Run,
    add_round,
    compile_runs,
    compose_pruner,
    one_round,
)
from evoprune.harness.benchmarks.latency_summary import summarise
from evoprune.harness.benchmarks.machine import machine_info
from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_text
from evoprune.harness.common.paths import RESULTS_DIR
from evoprune.harness.common.source import code_version
from evoprune.harness.inference.runtime import RUNTIMES


@dataclass
class LatencyBench:
    """One latency benchmark. ``None`` fields take their defaults here, per model and device: frames and
    budgets the paper's (`ModelSpec`), repeats 5 (video on CPU 2), runtimes eager and compiled on CUDA and eager
    on CPU, the figure at the largest budget. Bad values raise `ConfigError` naming them, before any model is
    built (the LLM's depth checks need the model's config only)."""

    model: str = "llava15"
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    dtype: str | None = None  # float16 on cuda, else float32
    frames: list[int] | None = None
    budgets: list[int] | None = None
    methods: list[str] = field(default_factory=lambda: [*METHODS, *EXTRA_METHODS])
    repeats: int | None = None  # timed interleaved rounds
    warmup: int = 1  # untimed interleaved rounds first
    pool: bool = True  # pool the vision-side stages doing identical work (`latency_summary.pool_key`)
    shapes: str = "real"  # real | tiny
    encoder_frames: int | None = None  # frames the vision side runs on (1 on cpu, all on cuda)
    llm_layers: int | None = None  # decoder layers timed, DART's K + 1 (1 on cpu, all on cuda)
    runtime: list[str] | None = None  # evoprune.harness.inference.runtime's, side by side when several
    figure_budget: int | None = None  # the video figure's budget
    out: Path = RESULTS_DIR  # csv/md/tex here, the figure in out/figures

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"model={self.model!r} is not one of: {', '.join(sorted(MODELS))}")
        spec = self.spec
        self.frames = self.frames or list(spec.frames)
        self.budgets = self.budgets or list(spec.budgets)
        if self.repeats is None:
            self.repeats = 2 if spec.is_video and self.device == "cpu" else 5
        on_cuda = torch.device(self.device).type == "cuda"
        chosen = self.runtime or (["eager", "compiled"] if on_cuda else ["eager"])
        unknown = sorted(set(chosen) - set(RUNTIMES))
        if unknown:
            raise ConfigError(f"runtime {unknown} is not one of: {', '.join(RUNTIMES)}")
        self.runtime = [name for name in RUNTIMES if name in chosen]  # in RUNTIMES' order, each once
        self.figure_budget = self.figure_budget or max(self.budgets)
        unknown = sorted(set(self.methods) - {*METHODS, *EXTRA_METHODS})
        if unknown:
            raise ConfigError(f"methods {unknown} are not among: {', '.join([*METHODS, *EXTRA_METHODS])}")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"repeats={self.repeats} must be >= 1 and warmup={self.warmup} >= 0")
        if not spec.is_video and self.frames != [1]:
            raise ConfigError(f"frames {self.frames}: {spec.label} reads one image (frames 1)")
        if min(self.frames) < 1 or (self.encoder_frames is not None and self.encoder_frames < 1):
            raise ConfigError(f"frames {self.frames} and encoder_frames={self.encoder_frames} must be >= 1")
        if self.figure_budget not in self.budgets:
            raise ConfigError(f"figure_budget={self.figure_budget} is not one of the budgets {self.budgets}")
        total = self.total_layers
        if not 1 <= self.resolved_llm_layers <= total:
            raise ConfigError(f"llm_layers={self.llm_layers} must be in [1, {total}]")
        if self.compiled and (self.resolved_llm_layers < total or self.resolved_encoder_frames < max(self.frames)):
            raise ConfigError(
                f"runtime compiled times the whole model, nothing scaled: leave llm_layers and encoder_frames "
                f"unset or pass {total} and {max(self.frames)}, got {self.resolved_llm_layers} and "
                f"{self.resolved_encoder_frames}"
            )

    @property
    def spec(self):
        return MODELS[self.model]

    @property
    def compiled(self) -> bool:
        return "compiled" in self.runtime

    @property
    def total_layers(self) -> int:
        return self.spec.llm[self.shapes]["num_hidden_layers"]

    @property
    def scaled_by_default(self) -> bool:
        """The CPU default scales (1 frame, 1 LLM layer); CUDA and the compiled runtime scale nothing."""
        return torch.device(self.device).type != "cuda" and not self.compiled

    @property
    def resolved_llm_layers(self) -> int:
        return self.llm_layers or (1 if self.scaled_by_default else self.total_layers)

    @property
    def resolved_encoder_frames(self) -> int:
        return self.encoder_frames or (1 if self.scaled_by_default else max(self.frames))


def redraw(bench: LatencyBench, csv_path: Path) -> list[dict]:
    """Draw the figure again from a written CSV (no timing); returns its rows."""
    rows = read_rows(csv_path)
    stem = output_stem(bench.spec, torch.device(bench.device).type, bench.shapes, runtime_runs(rows))
    panels = figure_panels(bench.spec, rows, bench.figure_budget)
    render_figure(panels, figure_path(bench.spec, bench.out, stem), figure_title(bench.spec, rows))
    return rows


def measure_latency(bench: LatencyBench) -> list[dict]:
    """Time every run, write <out>/<`output_stem`>.{csv,md,tex} and the figure atomically, print the table;
    returns the CSV's rows. Completed timed rounds are journalled in <out>/.<stem>.partial.json: started again
    with the same fields and code, a killed benchmark resumes after its last completed round."""
    spec, device = bench.spec, torch.device(bench.device)
    dtype = getattr(torch, bench.dtype or ("float16" if device.type == "cuda" else "float32"))
    stem = output_stem(spec, device.type, bench.shapes, bench.runtime)
    started = time.perf_counter()
    total_layers, compiled = bench.total_layers, bench.compiled
    runs = []
    for name in bench.runtime:  # each runtime's runs: native first, then every method x budget
        cells = [("none", None)] + [(m, b) for b in bench.budgets for m in bench.methods]
        runs += [Run(m, b, compose_pruner(spec.config, m, b), runtime_name=name) for m, b in cells]
    dart_layer = next((run.pruner.layer for run in runs if run.method == "dart"), 2)
    llm_layers = bench.resolved_llm_layers
    built_layers = max(llm_layers, dart_layer + 1) if llm_layers < total_layers else total_layers
    plan = {frames: min(frames, bench.resolved_encoder_frames) for frames in sorted(bench.frames)}

    loaded = build_model(spec, bench.shapes, built_layers, device, dtype)
    for run in runs:
        run.record_tokens()
    language_model = loaded.model.model.language_model
    clock = None if compiled else LayerClock(language_model.layers, device, timed=built_layers < total_layers)
    unrelated = ("out", "repeats", "warmup", "figure_budget")  # rounds stay valid when only these change
    identity = {k: v for k, v in dataclasses.asdict(bench).items() if k not in unrelated}
    journal = Journal(bench.out / f".{stem}.partial.json", identity | {"code": code_version()})
    # compiled: room for every run's graphs side by side, and a failure rather than eager runs past the limit
    limits = {"recompile_limit": max(torch._dynamo.config.recompile_limit, 4 * len(runs))}
    limits["fail_on_recompile_limit_hit"] = True
    dynamo_limits = torch._dynamo.config.patch(**limits) if compiled else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as folder, dynamo_limits:
        under_test = Bench(
            spec=spec,
            loaded=loaded,
            visual=sample_visual(spec, Path(folder)),
            text_model=cdpruner_text_model(loaded, bench.shapes),
            clock=clock,
            total_layers=total_layers,
            llm_layers=llm_layers,
            dart_layer=dart_layer,
        )
        warmup_rounds = bench.warmup
        if compiled:
            compile_runs(under_test, runs)
            warmup_rounds = max(bench.warmup, *(run.runtime.warmup_generations for run in runs))
        previous = journal.rounds[: bench.repeats]
        for record in previous:
            add_round(runs, record)
        done = len(previous)
        warmup = warmup_rounds if done < bench.repeats else 0  # nothing left to time: no warm-up either
        print(
            f"{spec.label}, {bench.shapes} shapes on {device} ({str(dtype).removeprefix('torch.')}): frames "
            f"{list(plan)} (vision side on {sorted(set(plan.values()))}), LLM {llm_layers}/{total_layers} layers "
            f"(DART {built_layers}); {len(runs)} runs per round, {warmup_rounds} warm-up + {bench.repeats} timed rounds"
            + (f", {done} done before (resumed from {journal.path})" if done else "")
            + f" (built in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        try:
            for round_index in range(warmup + bench.repeats - done):
                round_start = time.perf_counter()
                record = jsonable(one_round(under_test, runs, plan, warmup=round_index < warmup))
                if round_index >= warmup:
                    journal.add(record)
                    add_round(runs, record)
                kind = "warm-up" if round_index < warmup else "timed"
                print(f"round {round_index + 1} ({kind}): {time.perf_counter() - round_start:.1f} s", flush=True)
        finally:
            if clock is not None:
                clock.remove()

    rows = summarise(spec, bench.shapes, runs, plan, dart_layer, loaded.num_visual_tokens, pool=bench.pool)
    elapsed = time.perf_counter() - started
    info = machine_info(device, dtype)
    notes_by_frames = {f: measurement_note(f, v, llm_layers, total_layers, dart_layer) for f, v in plan.items()}
    native = rows[0]
    text_tokens = native["llm_tokens"] - native["visual_tokens"] - native["newline_tokens"]
    title = (
        f"TTFT per stage, {spec.label} {'tiny test ' if bench.shapes == 'tiny' else ''}shapes, random weights, "
        f"{device.type}, runtime {' and '.join(bench.runtime)}, median of {bench.repeats} interleaved rounds after "
        f"{warmup_rounds} warm-up (ms)"
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
            if bench.pool
            else "Not pooled: each run's own vision-side medians."
        )
        + " LLM side: one timing per round for every plain prefill of the same length.",
        "Speedup = native median / method median at the same frame count; (pred.) = native FLOPs / method FLOPs "
        "(see evoprune/harness/benchmarks/latency.py; selection and merging work not counted).",
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
                if len(bench.runtime) > 1
                else ""
            )
        )
    table = markdown(rows, title, notes)
    print(table)
    for row in rows:
        row |= {"repeats": bench.repeats, "warmup": warmup_rounds, "shapes": bench.shapes}
        row |= {"measurement": notes_by_frames[row["frames"]], "machine": info}
    write_csv(bench.out / f"{stem}.csv", rows)
    write_text(bench.out / f"{stem}.md", table)
    write_text(bench.out / f"{stem}.tex", latex(rows, title))
    panels = figure_panels(spec, rows, bench.figure_budget)
    render_figure(panels, figure_path(spec, bench.out, stem), figure_title(spec, rows))
    journal.finish()
    return rows
