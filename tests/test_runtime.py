"""``runtime=compiled``: what dynamo captures (one graph per hot call, no break), the eager answers from the
compiled calls, compilation kept in the warm-up, and the run's identity, folder and report."""

import json

import pytest
import torch
from conftest import compose_config
from PIL import Image

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.data.smoke_video import ensure_smoke_video_data
from evoprune.harness.evaluation import runner
from evoprune.harness.evaluation.runner import load_pruned_model
from evoprune.harness.evaluation.settings import check_config
from evoprune.harness.inference.pipeline import generate
from evoprune.harness.inference.pruning import Pruner, build_pruner
from evoprune.harness.inference.runtime import (
    WARMUP_NEW_TOKENS,
    Runtime,
    build_runtime,
    decode_step,
    tower_hidden_states,
)
from evoprune.harness.reports import paper_table
from evoprune.harness.results.run_folder import run_dir

IMAGE = Image.new("RGB", (64, 48), (200, 40, 90))


def _single_graph(fn, *args, **kwargs) -> None:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args, **kwargs)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize(
    ("model", "pruner"),
    [("tiny_llava", "none"), ("tiny_llava", "evoprune"), ("tiny_llava_video", "tome")],
)
def test_the_tower_as_each_pruner_leaves_it_is_one_graph(model, pruner):
    cfg = compose_config(f"model={model}", f"pruner={pruner}", f"budget={'null' if pruner == 'none' else 64}")
    built = build_pruner(cfg.pruner, cfg.budget)
    loaded, _, _ = load_pruned_model(cfg, built)
    size = loaded.model.config.vision_config.image_size
    try:
        with torch.inference_mode():
            _single_graph(tower_hidden_states, loaded.model.model.vision_tower, torch.randn(2, 3, size, size))
    finally:
        built.detach(loaded.model)


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_llava_video"])
def test_the_prefill_and_the_decode_step_are_one_graph_each(model):
    cfg = compose_config(f"model={model}")
    loaded, _, _ = load_pruned_model(cfg, Pruner(None))
    language_model, head = loaded.model.model.language_model, loaded.model.lm_head
    embeds = torch.randn(1, 30, language_model.config.hidden_size)
    mask = torch.zeros(30, dtype=torch.bool)
    mask[4:20] = True
    with torch.inference_mode():
        _single_graph(Pruner(None).prefill, language_model, embeds, mask, frames=1)
        out, _ = Pruner(None).prefill(language_model, embeds, mask)
        _single_graph(decode_step, language_model, head, torch.tensor([5]), out.cache)


def _answers(cfg, prompts, runtime_name):
    """Greedy answers (8 tokens) and the logits of every generated position, after one warm-up."""
    pruner = build_pruner(cfg.pruner, cfg.budget)
    loaded, device, _ = load_pruned_model(cfg, pruner)
    runtime = build_runtime(runtime_name, cfg.compile, pruner, device)
    visual = IMAGE if loaded.media == "image" else str(next((ensure_smoke_video_data() / "videos").glob("*.mp4")))
    logits = []

    @torch.compiler.disable  # else dynamo guards on the list's length and compiles again at every token
    def keep_logits(module, args, out):
        logits.append(out.flatten(0, -2))

    hook = loaded.model.lm_head.register_forward_hook(keep_logits)
    try:
        generate(loaded, pruner, visual, prompts[0], 2, [], "s", runtime, min_new_tokens=WARMUP_NEW_TOKENS)
        logits.clear()
        results = [generate(loaded, pruner, visual, prompt, 8, [], "s", runtime) for prompt in prompts]
    finally:
        hook.remove()
        pruner.detach(loaded.model)
    return [r.text for r in results], torch.cat(logits), [r.graphs_compiled for r in results]


@pytest.mark.parametrize(
    ("model", "pruner", "budget"),
    [
        ("tiny_llava_trained", "none", "null"),
        ("tiny_llava_trained", "dart", 64),
        ("tiny_llava_video_trained", "evoprune", "16 model.video.frames=4"),
    ],
)
def test_compiled_calls_give_the_eager_answers_and_compile_only_in_the_warm_up(model, pruner, budget):
    """Dynamo's graphs run by the cheapest backend (eager): the capture, not a code generator, is under test;
    prompts of two lengths after a warm-up on one of them compile nothing new."""
    overrides = [f"model={model}", f"pruner={pruner}", *f"budget={budget}".split(), "compile.backend.cpu=eager"]
    cfg = compose_config(*overrides)
    prompts = ["What is shown?", "What colour is the largest shape in the picture?"]
    eager_texts, eager_logits, _ = _answers(cfg, prompts, "eager")
    texts, logits, compiled_in_samples = _answers(cfg, prompts, "compiled")
    assert texts == eager_texts
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert compiled_in_samples == [0, 0]


def test_a_compiled_run_reports_its_runtime_and_lands_beside_the_eager_one(tmp_path):
    overrides = [f"output_dir={tmp_path}", "limit=1", "benchmark.tasks=[smoke_vqa]", "progress=false"]
    cfg = compose_config(*overrides, "runtime=compiled")
    assert runner.evaluate(cfg) == 0
    folder = run_dir(cfg)
    assert folder == run_dir(compose_config(*overrides)).parent.with_name("smoke_image-limit1-compiled") / "none-all"
    meta = json.loads((folder / "latency.json").read_text())["meta"]
    assert (meta["runtime"], meta["compile_backend"]) == ("compiled", "aot_eager")  # the CPU default
    assert meta["warmup_seconds"] > 0 and meta["samples_timed_with_compilation"] == 0
    assert "| cpu | compiled (aot_eager)" in (folder / "summary.txt").read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["runtime=jit"], "runtime='jit' is invalid .*accepted: eager, compiled"),
        (["runtime=compiled", "warmup=0"], "runtime=compiled needs warmup >= 1, got warmup=0"),
        (["runtime=compiled", "compile.backend.cpu=turbo"], "compile.backend.cpu='turbo' is not a torch.compile "),
    ],
)
def test_bad_runtime_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_config(*overrides))


def test_a_compiled_sweeps_table_has_its_own_files_and_says_its_runtime(tmp_path):
    overrides = ["+experiment=table1_smoke", "limit=2", "runtime=compiled", f"output_dir={tmp_path / 'runs'}"]
    written = paper_table.render(overrides, tmp_path / "tables", tmp_path / "figures")
    assert written == tmp_path / "tables" / "table1_smoke_compiled.md"  # the eager table1_smoke.* stays
    text = written.read_text()
    assert text.startswith("# Table 1: table1_smoke (runtime=compiled)") and "limit=2, runtime=compiled;" in text


def test_the_backend_and_the_warm_up_follow_the_device():
    """The config's choice per device type: on CUDA inductor with the tower as a CUDA graph, which needs a
    second warm-up generation (its first call runs as is, the second records it); on CPU aot_eager."""
    compile_cfg = compose_config().compile
    cuda = build_runtime("compiled", compile_cfg, Pruner(None), torch.device("cuda"))  # compiles lazily
    cpu = build_runtime("compiled", compile_cfg, Pruner(None), torch.device("cpu"))
    eager = build_runtime("eager", compile_cfg, Pruner(None), torch.device("cuda"))
    assert (cuda.backend, cuda.cuda_graph_tower, cuda.warmup_generations) == ("inductor", True, 2)
    assert (cpu.backend, cpu.cuda_graph_tower, cpu.warmup_generations) == ("aot_eager", False, 1)
    assert (eager.backend, eager.warmup_generations) == (None, 0)


@pytest.mark.parametrize(
    ("runtime", "warmup", "count"),
    [
        (Runtime(), 1, 1),
        (Runtime(), 0, 0),
        (Runtime(name="compiled"), 1, 1),
        (Runtime(name="compiled"), 3, 3),
        (Runtime(name="compiled", cuda_graph_tower=True), 1, 2),
    ],
)
def test_the_warm_up_runs_once_as_often_as_config_and_runtime_ask(monkeypatch, tiny_loaded, runtime, warmup, count):
    from evoprune.harness.evaluation import lmms_model

    calls = []
    monkeypatch.setattr(lmms_model, "generate", lambda *args, **kwargs: calls.append(kwargs["min_new_tokens"]))
    lm = lmms_model.PrunedLlava(tiny_loaded, Pruner(None), warmup=warmup, progress=False, runtime=runtime)
    for _ in range(3):  # three computed samples
        lm._warm_up(IMAGE, "What is it?", 1, [], "s")
    assert calls == [WARMUP_NEW_TOKENS] * count
