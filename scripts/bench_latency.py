"""Time to first token per stage: LLaVA-1.5-7B native vs the six pruners at 128/64/32 visual tokens,
measured beside the speedups a FLOP count predicts, and the paper's Figure 3 (stacked TTFT).

LLaVA-1.5-7B at its real size with random weights (latency does not depend on the weights, so
nothing is downloaded): CLIP ViT-L/14-336 (24 layers, width 1024, 577 tokens, features from layer
−2), the 2-layer MLP projector (1024 → 4096 → 4096) and Vicuna-7B's decoder (hidden 4096, MLP
11008, 32 layers, 32 heads, vocabulary 32000). One 640×480 image and the LLaVA-1.5 vicuna_v1
prompt (system message + a VQAv2 question with its answer-format instruction).

Every sample goes through the harness's own code: `evoprune.harness.pipeline.generate` (one new
token, so decode does nothing) with its `StageTimer` (CUDA events on CUDA, perf_counter on CPU),
and the pruners built by `evoprune.harness.pruning.build_pruner` from the Hydra-composed
configs/pruner/*.yaml, attached and detached as the runner does. CDPruner's CLIP text tower and
projections are CLIP-L's shapes with random weights (`scripts/bench_pruners.py`), tokenised by the
project's byte tokenizer (an upper bound on its text-tower cost; CLIP's BPE vocabulary is offline).

Stages are `evoprune.harness.timing.STAGES` up to `prefill`; `pre_llm` = vision_encoder +
other (the projector) + pruning, `ttft` = every stage before decode (preprocess included). Each round runs
native, then every method × budget, interleaved; the first `--warmup` rounds are discarded and
every time is a MEDIAN over the `--repeats` timed rounds (speedups: ratios of the medians). Stages
doing provably identical work are pooled into one median over every run doing it (`pool_key`:
the native encoder and 576-token projector of native, the post-encoder pruners and DART; the LLM
prefill at one sequence length); each method's own work comes from its own runs (``--no-pool``:
no pooling at all). A full CPU run takes about 6 minutes on 2 quiet cores.

On CUDA (``--device cuda``; written without GPU access, not yet run on one): float16, the whole
model, initialised on the GPU. On CPU (default without a GPU): float32,
the whole vision side, and the LLM built with only ``--llm-layers`` (default 3 = DART's K + 1)
full-width decoder layers, then scaled to 32: prefill = measured prefill (embedding, DART's
selection, final norm, lm_head of the last position, the measured layers) + (32 − measured) ×
the mean time of the measured layers that ran at the final sequence length. DART (K = 2) runs its
layers 0–1 on the full prompt and layer 2 on the pruned one, so its layers 3–31 are extrapolated
from its layer 2; the others' from all three measured layers.

FLOP prediction (matmul FLOPs, 2 per multiply-add): encoder per layer 8nd² + 4n²d + 16n′d² (n
tokens entering attention, n′ after EvoPrune's merge: `scripts/bench_encoder.py`), projector
2n(1024·4096 + 4096²), LLM per layer 2S(4d² + 3d·ff) + 4S²d for S = text + visual tokens (DART:
K layers at the full S, the rest at the pruned S). Selection and merging work is not counted:
measured below predicted is that work plus the lower efficiency of smaller matrix products.

    python scripts/bench_latency.py [--device cpu|cuda] [--repeats 5] [--warmup 1] [--shapes real|tiny]

Writes results/bench_latency_<device>.csv and .md and results/figures/fig3_ttft_<device>.png
(atomically; ``--shapes tiny`` adds ``_tiny`` to the names) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import CLIPVisionConfig, LlamaConfig, LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_encoder import CLIP_L_336, RESULTS, encoder_flops  # noqa: E402
from bench_pruners import clip_l_text_and_projections  # noqa: E402

import evoprune  # noqa: E402
from baselines.pruners import build_tiny_clip  # noqa: E402
from evoprune.harness.models import IMAGE_TOKEN, LoadedModel, build_byte_tokenizer, clip_image_processor, llava_config  # noqa: E402
from evoprune.harness.outputs import write_text  # noqa: E402
from evoprune.harness.pipeline import generate  # noqa: E402
from evoprune.harness.pruning import Pruner, build_pruner  # noqa: E402
from evoprune.harness.timing import STAGES  # noqa: E402

METHODS = ("fastervlm", "vispruner", "dart", "divprune", "cdpruner", "evoprune")
LABELS = {
    "none": "Native",
    "fastervlm": "FasterVLM",
    "vispruner": "VisPruner",
    "dart": "DART",
    "divprune": "DivPrune",
    "cdpruner": "CDPruner",
    "evoprune": "EvoPrune",
}
TTFT_STAGES = tuple(stage for stage in STAGES if stage != "decode")
# The harness's LLaVA-1.5 prompt (vicuna_v1, system sentence included: configs/model/llava15_7b.yaml)
# and a VQAv2 question with lmms-eval's answer-format instruction.
PROMPT_TEMPLATE = OmegaConf.load(ROOT / "configs" / "model" / "llava15_7b.yaml").prompt_template
QUESTION = "What color is the umbrella the woman is holding?\nAnswer the question using a single word or phrase."
VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
SHAPES = {
    "real": dict(vision=CLIP_L_336, llm=VICUNA_7B, vocab_size=32000, clip="clip-l"),
    # The real 24×24 token grid and encoder depth (so budgets 128/64/32 and EvoPrune's schedule are
    # the real ones), tiny widths: for tests, a few seconds.
    "tiny": dict(
        vision=dict(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=24,
            num_attention_heads=4,
            image_size=336,
            patch_size=14,
        ),
        llm=dict(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4),
        vocab_size=1000,
        clip="tiny",
    ),
}


# ---------------------------------------------------------------------------------------------
# FLOP model
# ---------------------------------------------------------------------------------------------


def llm_layer_flops(seq: int, width: int, mlp_width: int) -> float:
    """One Llama decoder layer over ``seq`` tokens: q/k/v/o projections (4d², multi-head
    attention), the gated MLP (3·d·ff), attention scores and weighted sum (2·S²·d each)."""
    return 2 * seq * (4 * width * width + 3 * width * mlp_width) + 4 * seq * seq * width


def llm_flops(seq: int, width: int, mlp_width: int, layers: int, pruned_seq: int | None = None, split: int = 0):
    """The decoder's prefill: ``split`` layers over ``seq`` tokens, the rest over ``pruned_seq``
    (DART); without ``pruned_seq`` every layer over ``seq``."""
    if pruned_seq is None:
        pruned_seq, split = seq, layers
    return split * llm_layer_flops(seq, width, mlp_width) + (layers - split) * llm_layer_flops(
        pruned_seq, width, mlp_width
    )


def projector_flops(tokens: int, vision_width: int, llm_width: int) -> float:
    """LLaVA-1.5's 2-layer MLP projector (vision → LLM width → LLM width) on ``tokens`` tokens."""
    return 2 * tokens * (vision_width * llm_width + llm_width * llm_width)


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
# Model, prompt and pruners
# ---------------------------------------------------------------------------------------------


def build_word_tokenizer():
    """A word-level tokenizer (words, punctuation and newlines are tokens) built offline.

    Llama's SentencePiece model is not available offline; on this English prompt a word-level split
    lands within a few tokens of it (it splits fewer words into pieces but the same punctuation).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]|\n", PROMPT_TEMPLATE + QUESTION)))
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Punctuation(),
        ]
    )
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def build_model(shapes: dict, llm_layers: int, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """LLaVA-1.5 with random weights, the LLM cut to ``llm_layers`` decoder layers, as a `LoadedModel`."""
    tokenizer = build_word_tokenizer()
    vision = CLIPVisionConfig(**shapes["vision"])
    llm = shapes["llm"] | {"num_hidden_layers": llm_layers}
    text = LlamaConfig(
        **llm,
        num_key_value_heads=llm["num_attention_heads"],
        vocab_size=shapes["vocab_size"],
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = llava_config(vision, text, tokenizer, feature_layer=-2)
    torch.manual_seed(0)
    with torch.device(device):  # initialised in place: a 7B model in float32 on the host would not fit
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model = model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=clip_image_processor(vision.image_size, pad_to_square=True),
        image_token_id=config.image_token_id,
        prompt_template=PROMPT_TEMPLATE,
        device=device,
        dtype=dtype,
    )


def compose_pruner(method: str, budget: int | None) -> Pruner:
    """The pruner `run.py model=llava15_7b pruner=<method> budget=<budget>` would build."""
    from hydra import compose, initialize_config_dir

    overrides = ["model=llava15_7b", f"pruner={method}", f"budget={'null' if budget is None else budget}"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return build_pruner(cfg.pruner, cfg.budget)


@dataclass
class Run:
    """One method at one budget, with its pruner and timed rounds."""

    method: str
    budget: int | None
    pruner: Pruner
    samples: list[dict[str, float]] = field(default_factory=list)
    llm_tokens: int = 0
    visual_tokens: int = 0
    schedule: list[int] | None = None

    def attach(self, loaded: LoadedModel, clip) -> None:
        """As the runner does before its samples; CDPruner gets the random CLIP-L text tower here
        instead of loading openai/clip-vit-large-patch14-336 from disk."""
        if self.method == "cdpruner":
            self.pruner.use_image_text_model("clip", *clip)
        else:
            self.pruner.attach(loaded.model)
        if self.method == "evoprune" and self.schedule is None:
            self.schedule = evoprune.schedule_of(loaded.model.model.vision_tower)

    def detach(self, loaded: LoadedModel) -> None:
        if self.method != "cdpruner":
            self.pruner.detach(loaded.model)


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


def time_run(run: Run, loaded: LoadedModel, clip, image, clock: LayerClock, total_layers: int) -> dict[str, float]:
    """One generation through the harness pipeline: seconds per stage, prefill scaled to the full LLM."""
    run.attach(loaded, clip)
    try:
        result = generate(loaded, run.pruner, image, QUESTION, max_new_tokens=1, until=[])
    finally:
        run.detach(loaded)
    layer_times, layer_tokens = clock.take()
    measured_layers = len(loaded.model.model.language_model.layers)
    if len(layer_times) != measured_layers:
        raise RuntimeError(f"expected {measured_layers} decoder layer calls in prefill, saw {len(layer_times)}")
    times = {stage: result.times[stage] for stage in TTFT_STAGES}
    times["prefill_measured"] = times["prefill"]
    times["prefill"] = scaled_prefill(times["prefill"], layer_times, layer_tokens, total_layers)
    times["pre_llm"] = times["vision_encoder"] + times["other"] + times["pruning"]
    times["ttft"] = sum(times[stage] for stage in TTFT_STAGES)
    run.visual_tokens = result.visual_tokens_after
    run.llm_tokens = layer_tokens[-1]
    return times


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

TIMED = (*TTFT_STAGES, "prefill_measured", "pre_llm", "ttft")
SPEEDUPS = ("pre_llm", "prefill", "ttft")


def pool_key(run: Run, stage: str):
    """Runs doing provably the same work in ``stage`` share a key (their samples are pooled):
    preprocess (same image and prompt) across all runs; the native encoder and the projector on all
    patch tokens across every run but EvoPrune's; the LLM prefill across runs feeding it the same
    number of tokens, except DART's (its prefill holds its selection and two sequence lengths).
    Everything else (pruning, EvoPrune's encoder, DART's prefill) is the run's own."""
    if stage == "preprocess":
        return "all"
    if stage in ("vision_encoder", "other") and run.method != "evoprune":
        return "native"
    if stage == "prefill" and run.method != "dart":
        return ("llm", run.llm_tokens)
    return (run.method, run.budget)


def stage_medians(runs: list[Run], pool: bool) -> list[dict[str, float]]:
    """Median seconds per stage for each run (pooled by `pool_key` when ``pool``); pre-LLM and TTFT
    are the sums of their stages' medians when pooled, the medians of the per-round sums otherwise."""
    pooled: dict = {}
    if pool:
        for run in runs:
            for stage in TTFT_STAGES:
                pooled.setdefault((stage, pool_key(run, stage)), []).extend(s[stage] for s in run.samples)
    result = []
    for run in runs:
        medians = {name: statistics.median(s[name] for s in run.samples) for name in TIMED}
        medians["own_vision_encoder"], medians["own_prefill"] = medians["vision_encoder"], medians["prefill"]
        if pool:
            medians |= {stage: statistics.median(pooled[stage, pool_key(run, stage)]) for stage in TTFT_STAGES}
            medians["pre_llm"] = medians["vision_encoder"] + medians["other"] + medians["pruning"]
            medians["ttft"] = sum(medians[stage] for stage in TTFT_STAGES)
        result.append(medians)
    return result


def summarise(
    runs: list[Run], shapes: dict, text_tokens: int, patches: int, dart_layer: int, pool: bool = True
) -> list[dict]:
    """One row per run: median ms per stage, FLOPs, measured and FLOP-predicted speedups vs native."""
    vision, llm = shapes["vision"], shapes["llm"]
    width, mlp_width = vision["hidden_size"], vision["intermediate_size"]
    layers = vision["num_hidden_layers"]
    d, ff, n_layers = llm["hidden_size"], llm["intermediate_size"], llm["num_hidden_layers"]
    rows = []
    for run, medians in zip(runs, stage_medians(runs, pool), strict=True):
        row = {"method": run.method, "budget": run.budget or patches, "visual_tokens": run.visual_tokens}
        row["llm_tokens"] = run.llm_tokens
        row |= {f"{name}_ms": seconds * 1e3 for name, seconds in medians.items()}
        schedule = run.schedule or [0] * layers
        tokens_out = run.budget if run.method == "evoprune" else patches
        pre = encoder_flops(schedule, patches, 1, width, mlp_width) + projector_flops(tokens_out, width, d)
        full_seq = text_tokens + patches
        kept_seq = text_tokens + (run.budget or patches)
        if run.method == "dart":
            prefill = llm_flops(full_seq, d, ff, n_layers, pruned_seq=kept_seq, split=dart_layer)
        else:
            prefill = llm_flops(kept_seq, d, ff, n_layers)
        row |= {"pre_llm_gflops": pre / 1e9, "prefill_gflops": prefill / 1e9, "ttft_gflops": (pre + prefill) / 1e9}
        rows.append(row)
    native = rows[0]
    for row in rows:
        for name in SPEEDUPS:
            row[f"speedup_{name}"] = native[f"{name}_ms"] / row[f"{name}_ms"]
            row[f"predicted_{name}"] = native[f"{name}_gflops"] / row[f"{name}_gflops"]
    return rows


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


def scaling_note(measured: int, total: int, dart_layer: int) -> str:
    if measured == total:
        return f"LLM: all {total} decoder layers measured (no scaling)"
    return (
        f"LLM: {measured} of {total} full-width decoder layers measured, scaled to {total}: prefill = measured prefill "
        f"+ {total - measured} x mean time of the measured layers at the final sequence length "
        f"(DART, K={dart_layer}: {_layers(0, dart_layer - 1)} measured on the full prompt, "
        f"{_layers(dart_layer, measured - 1)} on the pruned one, {_layers(measured, total - 1)} extrapolated from "
        f"{'it' if measured - dart_layer == 1 else 'them'})"
    )


def write_csv(path: Path, rows: list[dict], repeats: int, warmup: int, note: str) -> None:
    buffer = io.StringIO()
    fields = [*rows[0], "repeats", "warmup", "llm_scaling"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        writer.writerow(cells | {"repeats": repeats, "warmup": warmup, "llm_scaling": note})
    write_text(path, buffer.getvalue())


def markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    lines = [
        f"# {title}",
        "",
        "| method | budget | LLM tokens | preprocess | encoder | pruning | other | prefill | pre-LLM | TTFT "
        "| pre-LLM speedup (pred.) | prefill speedup (pred.) | TTFT speedup (pred.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ms = " | ".join(
            f"{row[f'{name}_ms']:.1f}"
            for name in ("preprocess", "vision_encoder", "pruning", "other", "prefill", "pre_llm", "ttft")
        )
        speed = " | ".join(f"{row[f'speedup_{n}']:.2f}x ({row[f'predicted_{n}']:.2f}x)" for n in SPEEDUPS)
        budget = "all" if row["method"] == "none" else row["budget"]
        lines.append(f"| {LABELS[row['method']]} | {budget} | {row['llm_tokens']} | {ms} | {speed} |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def render_figure(rows: list[dict], path: Path, title: str) -> None:
    """Figure 3's layout: one panel per budget, one bar per method (native first), TTFT stacked into
    visual encoder / other (preprocess + projector + pruning) / LLM prefill; below, the same bars
    without the LLM (the pre-LLM part at its own scale), labelled with pre-LLM relative to native."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    native = rows[0]
    budgets = sorted({row["budget"] for row in rows[1:]}, reverse=True)
    fig, axes = plt.subplots(
        2, len(budgets), figsize=(4.0 * len(budgets), 7.4), sharey="row", squeeze=False, height_ratios=(3, 2)
    )
    colours = ("#4C72B0", "#DD8452", "#55A868")
    for column, budget in enumerate(budgets):
        bars = [native] + [row for row in rows[1:] if row["budget"] == budget]
        x = np.arange(len(bars))
        for top, ax in enumerate(axes[:, column]):
            total = "ttft" if top == 0 else "pre_llm"
            scale, unit = (1e-3, "s") if native[f"{total}_ms"] >= 2000 else (1.0, "ms")
            encoder = np.array([row["vision_encoder_ms"] for row in bars]) * scale
            other = np.array([row["other_ms"] + row["pruning_ms"] for row in bars]) * scale
            if top == 0:
                other += np.array([row["preprocess_ms"] for row in bars]) * scale
            ax.bar(x, encoder, color=colours[0], label="visual encoder")
            ax.bar(x, other, bottom=encoder, color=colours[1], label="other (preprocess + projector + pruning)")
            heights = encoder + other
            if top == 0:
                prefill = np.array([row["prefill_ms"] for row in bars]) * scale
                ax.bar(x, prefill, bottom=heights, color=colours[2], label="LLM prefill")
                heights = heights + prefill
            for i, row in enumerate(bars):
                ax.annotate(
                    f"{row[f'{total}_ms'] / native[f'{total}_ms']:.2f}",
                    (i, heights[i]),
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
                ax.set_ylabel(f"time to first token ({unit})" if top == 0 else f"pre-LLM, no preprocess ({unit})")
        axes[0][column].set_title(f"{budget} visual tokens")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9, x=0.01, ha="left", y=0.99)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")  # written whole, then renamed over the old figure
    try:
        fig.savefig(tmp, format="png", dpi=150)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="default: float16 on cuda, else float32"
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=[128, 64, 32])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (medians over these)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed interleaved rounds first")
    parser.add_argument(
        "--no-pool", action="store_true", help="report each run's own medians, without pooling identical stages"
    )
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="real")
    parser.add_argument(
        "--llm-layers", type=int, default=None, help="decoder layers built and timed (default: all on cuda, 3 on cpu)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the csv/md (figure in <out>/figures)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    started = time.perf_counter()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    shapes = SHAPES[args.shapes]
    total_layers = shapes["llm"]["num_hidden_layers"]
    runs = [Run("none", None, compose_pruner("none", None))]
    runs += [Run(m, b, compose_pruner(m, b)) for b in args.budgets for m in args.methods]
    dart_layer = next((run.pruner.layer for run in runs if run.method == "dart"), 2)
    llm_layers = args.llm_layers or (total_layers if device.type == "cuda" else min(dart_layer + 1, total_layers))
    if not dart_layer < llm_layers <= total_layers:
        parser.error(
            f"--llm-layers must be in [{dart_layer + 1}, {total_layers}] (DART prunes before layer {dart_layer})"
        )

    loaded = build_model(shapes, llm_layers, device, dtype)
    vision_config = loaded.model.config.vision_config
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    byte_tokenizer = build_byte_tokenizer()
    if shapes["clip"] == "clip-l":
        text_tower = clip_l_text_and_projections(vision_config.hidden_size, len(byte_tokenizer))
    else:
        text_tower = build_tiny_clip(vision_config.hidden_size, byte_tokenizer, seed=0)
    clip = (text_tower.to(device, torch.float32).eval(), byte_tokenizer)  # float32 as CDPrunerPruner.attach
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    clock = LayerClock(loaded.model.model.language_model.layers, device, timed=llm_layers < total_layers)
    print(
        f"{args.shapes} shapes on {device} ({str(dtype).removeprefix('torch.')}), "
        f"LLM {llm_layers}/{total_layers} layers timed; {len(runs)} runs per round, "
        f"{args.warmup} warm-up + {args.repeats} timed rounds "
        f"(built in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    try:
        for round_index in range(args.warmup + args.repeats):
            round_start = time.perf_counter()
            for run in runs:
                times = time_run(run, loaded, clip, image, clock, total_layers)
                if round_index >= args.warmup:
                    run.samples.append(times)
            kind = "warm-up" if round_index < args.warmup else "timed"
            print(f"round {round_index + 1} ({kind}): {time.perf_counter() - round_start:.1f} s", flush=True)
    finally:
        clock.remove()

    native = runs[0]
    text_tokens = native.llm_tokens - native.visual_tokens
    rows = summarise(runs, shapes, text_tokens, patches, dart_layer, pool=not args.no_pool)
    elapsed = time.perf_counter() - started
    note = scaling_note(llm_layers, total_layers, dart_layer)
    info = machine_info(device, dtype)
    title = (
        f"TTFT per stage, LLaVA-1.5-7B {'tiny test ' if args.shapes == 'tiny' else ''}shapes, random weights, "
        f"{device.type}, median of {args.repeats} interleaved rounds after {args.warmup} warm-up (ms)"
    )
    notes = [
        note + ".",
        f"Prompt: LLaVA-1.5 vicuna_v1 with a VQAv2 question, {text_tokens} text tokens (word-level tokenizer; "
        f"Llama's gives a few more) + {patches} visual tokens for native; batch size 1, one new token.",
        "Each round runs native, then every method x budget (interleaved); every time is a MEDIAN over the timed "
        "rounds. "
        + (
            "Pooled: stages doing provably identical work are one median over all the runs doing it: preprocess "
            "(all runs), the native encoder and the 576-token projector (native, the four post-encoder pruners, "
            "DART), the LLM prefill at a given sequence length (native / each budget's post-encoder pruners and "
            "EvoPrune; not DART). Each method's own work (pruning, EvoPrune's encoder, DART's prefill) is from its "
            "own runs only; pre-LLM and TTFT are sums of the stage medians. Per-run medians of the encoder and "
            "prefill are in the CSV (own_vision_encoder_ms, own_prefill_ms)."
            if not args.no_pool
            else "Not pooled: each run's own medians; pre-LLM and TTFT are medians of per-round sums, so the stage "
            "medians need not add up to them."
        ),
        "Speedup = native median / method median; (pred.) = native FLOPs / method FLOPs (encoder 8nd^2 + 4n^2d + "
        "16n'd^2 per layer, projector, LLM 2S(4d^2 + 3d*ff) + 4S^2d per layer; DART split at its layer K; selection "
        "work not counted).",
        "pre-LLM = vision_encoder + other (projector) + pruning; TTFT = preprocess + pre-LLM + prefill (every stage "
        "before decode). DART's selection runs inside prefill, EvoPrune's merging inside vision_encoder.",
        f"Machine: {info}. Whole run (build + all rounds) {elapsed / 60:.1f} min.",
    ]
    table = markdown(rows, title, notes)
    print(table)
    suffix = f"{device.type}_tiny" if args.shapes == "tiny" else device.type
    write_csv(args.out / f"bench_latency_{suffix}.csv", rows, args.repeats, args.warmup, note)
    write_text(args.out / f"bench_latency_{suffix}.md", table)
    scaled = f"{total_layers} layers scaled from {llm_layers} measured" if llm_layers < total_layers else "all layers"
    figure_title = (
        f"{title.split(', median')[0]}: {info.split(';')[0]}, median of {args.repeats}\n"
        f"LLM prefill: {scaled}; labels: TTFT (top) and pre-LLM (bottom) relative to native"
    )
    render_figure(rows, args.out / "figures" / f"fig3_ttft_{suffix}.png", figure_title)
    return rows


if __name__ == "__main__":
    main()
