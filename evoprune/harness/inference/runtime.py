"""How a run's three hot calls execute: ``eager`` (PyTorch as written, the paper's setting) or ``compiled``.

``compiled`` wraps, for Native and every pruner alike, in `torch.compile`:

- the vision tower on one frame batch, as the pruner left it (EvoPrune and ToMe patch it): static
  shapes, so one graph per frame-batch shape;
- the prefill: the pruner's ``prefill`` hook (the LLM over the whole prompt, LLM-side pruning such as
  DART's included), the prompt length marked dynamic so one graph serves every prompt;
- the decode step (one token through the LLM and its head), the KV cache's length marked dynamic.

The backend and the modes come from config ``compile`` by device type. On CUDA with inductor the tower
takes ``tower_mode`` (``reduce-overhead``: a CUDA graph replay, its outputs copied out before the next
batch overwrites them); the prefill and decode take ``llm_mode`` (their lengths vary, so no CUDA graphs:
padding prompts to length buckets over a static KV cache is not done here). Compilation happens in the
run's warm-up, which decodes at least `WARMUP_NEW_TOKENS` tokens whatever it answers, so the decode
step is compiled there too; `graphs_compiled` lets the caller flag a timed sample that still compiled
one (a new frame-batch shape, say). DART's prefill reads values on the host, so its graph breaks there
and runs in pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from evoprune.harness.common.paths import CONFIG_DIR

RUNTIMES = ("eager", "compiled")
WARMUP_NEW_TOKENS = 2  # a prefill and at least one decode step


def tower_hidden_states(tower, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every layer's hidden states of the vision tower on one frame batch."""
    return tower(pixel_values, output_hidden_states=True).hidden_states


def decode_step(language_model, lm_head, token_ids: torch.Tensor, past):
    """One greedy step: the LLM on ``token_ids`` (1,) with its cache; (next token ids (1,), the cache)."""
    out = language_model(input_ids=token_ids[:, None], cache=past, use_cache=True)
    return lm_head(out.last_hidden_state[:, -1]).argmax(-1), out.cache


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far (a new one during a timed sample means
    compilation was inside its time). Dynamo is imported here, not with the module: 0.65 s that an eager
    run, or a config error, never needs."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@dataclass(frozen=True)
class Runtime:
    """The three hot calls of one run, eager or compiled (build with `build_runtime`)."""

    name: str = "eager"
    backend: str | None = None  # torch.compile's backend; None when eager
    tower_fn: Callable = tower_hidden_states
    prefill_fn: Callable | None = None  # None: the pruner's own ``prefill``
    decode_fn: Callable = decode_step
    cuda_graph_tower: bool = False  # the tower replays a CUDA graph (inductor's reduce-overhead)

    @property
    def warmup_generations(self) -> int:
        """Untimed generations needed before the first timed one: one to compile; with the tower as a CUDA
        graph two, as CUDA-graph trees run a new graph's first call as is and record it at the second."""
        return 0 if self.name == "eager" else 2 if self.cuda_graph_tower else 1

    def tower(self, tower, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.cuda_graph_tower:
            return self.tower_fn(tower, pixel_values)
        torch.compiler.cudagraph_mark_step_begin()
        # the graph's outputs live in memory its next replay overwrites: copied out
        return tuple(h.clone() for h in self.tower_fn(tower, pixel_values))

    def prefill(self, pruner, language_model, inputs_embeds: torch.Tensor, image_mask: torch.Tensor, frames: int):
        if self.prefill_fn is None:
            return pruner.prefill(language_model, inputs_embeds, image_mask, frames=frames)
        torch._dynamo.mark_dynamic(inputs_embeds, 1)
        torch._dynamo.mark_dynamic(image_mask, 0)
        return self.prefill_fn(language_model, inputs_embeds, image_mask, frames=frames)

    def decode(self, language_model, lm_head, token_ids: torch.Tensor, past):
        if self.name == "compiled":
            for layer in getattr(past, "layers", ()):
                torch._dynamo.mark_dynamic(layer.keys, 2)
                torch._dynamo.mark_dynamic(layer.values, 2)
        return self.decode_fn(language_model, lm_head, token_ids, past)


EAGER = Runtime()


def configured_compile():
    """``configs/config.yaml``'s ``compile`` settings, for scripts that build a runtime without run.py."""
    from omegaconf import OmegaConf

    return OmegaConf.load(CONFIG_DIR / "config.yaml").compile


def _compile_options(compile_cfg, device: torch.device, part: str) -> dict:
    backend = compile_cfg.backend.get(device.type)
    if backend is None:
        raise ValueError(
            f"compile.backend has no entry for device type {device.type!r}; accepted: a torch.compile backend "
            f"name per device type, e.g. compile.backend.{device.type}=inductor"
        )
    mode = compile_cfg.get(f"{part}_mode") if backend == "inductor" and device.type == "cuda" else None
    return {"backend": backend, "mode": mode}


def _own_prefill(pruner) -> bool:
    from evoprune.harness.inference.pruning import Pruner

    return type(pruner).prefill is not Pruner.prefill


def build_runtime(name: str, compile_cfg, pruner, device: torch.device, reset: bool = True) -> Runtime:
    """The runtime ``name`` (one of `RUNTIMES`) for ``pruner``'s run on ``device``; call after
    ``pruner.attach`` (the tower is compiled as patched). ``reset`` drops every graph compiled before in
    this process (a run compiles its own); ``reset=False`` keeps them, for a benchmark interleaving runs:
    dynamo's guards tell the towers of differently patched runs apart (each its own graph, so raise
    ``torch._dynamo.config.recompile_limit`` for many runs)."""
    if name not in RUNTIMES:
        raise ValueError(f"runtime={name!r} is not one of: {', '.join(RUNTIMES)}")
    if name == "eager":
        return EAGER
    if reset:
        torch._dynamo.reset()
    tower = _compile_options(compile_cfg, device, "tower")
    llm = _compile_options(compile_cfg, device, "llm")
    return Runtime(
        name="compiled",
        backend=tower["backend"],
        tower_fn=torch.compile(tower_hidden_states, dynamic=False, **tower),
        # a pruner's own prefill (DART's) reads values on the host: its graph breaks, and the pieces after
        # a break get no mark_dynamic, so every size in it is dynamic from the first compile
        prefill_fn=torch.compile(pruner.prefill, dynamic=True if _own_prefill(pruner) else None, **llm),
        decode_fn=torch.compile(decode_step, **llm),
        cuda_graph_tower=tower["mode"] == "reduce-overhead",
    )
