"""Shared fixtures: Hydra composition of the project's configs, and the tiny model."""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO_ROOT / "configs")


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker (and each process it starts) gets its share of the cores for torch's
    threads: workers each running all-core OpenMP pools on the same cores spin against each other (measured
    on 2 cores, -n 2: 446 s with the default threads, 268 s with one each)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores()

# Modules holding a test of 30 s or more (make test's --durations): collected first, so that under
# pytest-xdist's loadscope each starts while the other worker still has short modules to take, instead
# of one worker running it alone at the end (test_trained_tiny_video sorts late by name: a 80 s tail).
SLOW_MODULES = ("test_trained_tiny_video.py", "test_table1.py", "test_trained_tiny.py")


def pytest_collection_modifyitems(items):
    """Slow modules first, each in its collected order; everything else after, unchanged."""
    items.sort(key=lambda item: item.path.name not in SLOW_MODULES)


def pytest_collection_finish(session):
    """Freeze what collection imported (torch, transformers, lmms-eval, the harness: ~500k objects) out of the
    garbage collector's sight: each automatic full collection during the tests would walk them all again."""
    gc.collect()
    gc.freeze()


USER_RUNS = REPO_ROOT / "results" / "runs"  # the checkout's default output_dir: the user's, never a test's


def _user_runs() -> set[str]:
    return {str(path) for path in USER_RUNS.rglob("*")} if USER_RUNS.exists() else set()


def pytest_sessionstart(session):
    session.config.stash[_USER_RUNS_KEY] = _user_runs()


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a test wrote into the checkout's results/runs (a run without output_dir=tmp_path)."""
    if hasattr(session.config, "workerinput"):  # the controller checks, once
        return
    written = sorted(_user_runs() - session.config.stash[_USER_RUNS_KEY])
    if written:
        print(f"\ntests wrote into {USER_RUNS} (pass output_dir=tmp_path): {written[:5]}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_USER_RUNS_KEY = pytest.StashKey[set]()


@pytest.fixture(autouse=True)
def _thread_count_kept():
    """Each test leaves torch's thread count as it found it: a test raising it would run every later test of
    its worker on more threads than the worker's share of the cores (they then spin against each other)."""
    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads, f"test changed torch's threads {threads} -> {torch.get_num_threads()}"


@pytest.fixture
def eager_compile_backend(monkeypatch):
    """The benchmarks' compiled runtime on the cheapest backend (dynamo's graphs run as captured), for tests of a
    benchmark's rows and tables rather than of a code generator (the CPU default, aot_eager: test_runtime.py)."""
    from omegaconf import OmegaConf

    from evoprune.harness.benchmarks import latency_runs, ttft

    for module in (latency_runs, ttft):
        monkeypatch.setattr(module, "COMPILE", OmegaConf.merge(module.COMPILE, {"backend": {"cpu": "eager"}}))


def compose_config(*overrides: str):
    """The config `python run.py <overrides>` would run with."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def scripted_lmms(reply):
    """An lmms-eval model answering each generate_until request with ``reply(model, request)``."""
    from lmms_eval.api.model import lmms

    class Scripted(lmms):
        def generate_until(self, requests):
            return [reply(self, request) for request in requests]

        def loglikelihood(self, requests):
            raise TypeError("the scripted test model answers generate_until requests only")

        def generate_until_multi_round(self, requests):
            raise TypeError("the scripted test model answers single-round requests only")

    return Scripted()


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Make loading tasks or a model fail the test: for checks that must come first."""
    from evoprune.harness.evaluation import runner

    def forbidden(*args, **kwargs):
        raise AssertionError("heavy work (tasks or model loading) started before the config was checked")

    monkeypatch.setattr(runner, "load_tasks", forbidden)
    monkeypatch.setattr(runner, "load_model", forbidden)


@pytest.fixture(scope="session")
def tiny_loaded():
    """The default tiny LLaVA on CPU in float32 (built once per session)."""
    from evoprune.harness.models.loading import load_model

    cfg = compose_config()
    return load_model(cfg.model, torch.device("cpu"), torch.float32, seed=cfg.seed)


def run_py(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python run.py <args>` to completion, output captured; ``env`` adds to the environment."""
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def read_docs(data_dir: Path, task: str) -> list[dict]:
    """The generated docs of ``task`` (one JSON object per line)."""
    return [json.loads(line) for line in (data_dir / f"{task}.jsonl").read_text().splitlines()]


def file_tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_tiny_script():
    """``scripts/train_tiny.py`` as a module."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import train_tiny

    return train_tiny


def answers_and_logits(cfg, samples) -> tuple[list[str], torch.Tensor]:
    """``cfg``'s greedy answers to ``samples`` ((image or video path, prompt, sample id)) and the logits of every
    generated position, concatenated."""
    from evoprune.harness.evaluation.runner import load_pruned_model
    from evoprune.harness.inference.pipeline import generate
    from evoprune.harness.inference.pruning import build_pruner

    pruner = build_pruner(cfg.pruner, cfg.budget)
    loaded, _, _ = load_pruned_model(cfg, pruner)
    logits = []
    hook = loaded.model.lm_head.register_forward_hook(lambda module, args, out: logits.append(out.flatten(0, -2)))
    try:
        texts = [generate(loaded, pruner, image, prompt, 8, [], sample).text for image, prompt, sample in samples]
    finally:
        hook.remove()
        pruner.detach(loaded.model)
    return texts, torch.cat(logits)


def chance_of_at_least(right: int, questions: int, chance: float) -> float:
    """P(a guesser right with probability ``chance`` per question gets at least ``right`` of ``questions``)."""
    return sum(
        math.comb(questions, k) * chance**k * (1 - chance) ** (questions - k) for k in range(right, questions + 1)
    )


def assert_packed_as_alone(model, examples, blocks) -> None:
    """Each item of ``blocks`` (rows of items of one scene) scores in its packed row as in its own sequence:
    the same logits (to 1e-5) and targets."""
    from evoprune.harness.training.trainer import logits_of, sequences

    with torch.no_grad():
        embeds, labels, mask, positions, _ = sequences(model, examples, blocks, 1.0)
        packed = logits_of(model, embeds, mask, positions)
        for row, block in enumerate(blocks):
            end = len(block[0][1]) + examples.visual_length(block[0][0])
            for item in block:
                alone = sequences(model, examples, [[item]], 1.0)
                length = len(item[2]) + len(item[3]) - 1
                expected = logits_of(model, *[alone[0], alone[2], alone[3]])[0, -length:]
                assert torch.allclose(packed[row, end : end + length], expected, atol=1e-5)
                assert torch.equal(labels[row, end : end + length], alone[1][0, -length:])
                end += length


def local_task_manager(include_path: Path):
    """lmms-eval's task index of one local task folder (no built-in tasks)."""
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path), include_defaults=False)


def count_lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def start(args, log):
    """`run.py` as a child process, output to files (a full pipe would stall it)."""
    out, err = open(log.with_suffix(".out"), "w"), open(log.with_suffix(".err"), "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=REPO_ROOT, stdout=out, stderr=err, preexec_fn=_default_sigint
    )


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: a shell without job control starts background jobs with SIGINT ignored,
    which the child would inherit (a CI script run with `&` does)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_when(proc, ready, sig, timeout=300) -> int:
    """Send ``sig`` as soon as ``ready()`` holds and return the process's exit status; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting to interrupt the run"
        time.sleep(0.01)
    proc.send_signal(sig)
    return proc.wait(timeout=60)
