"""The open pruner interface: a pruner is its config's ``_target_`` class, from this repo or any package on
the search path; bad targets and fields are config errors; every selection is checked centrally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from omegaconf import OmegaConf

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.overrides import check_group_choices
from evoprune.harness.inference.pruning import Pruner, VisualTokens, build_pruner, check_selection, pruner_class

PRUNER_MODULE = '''
import torch

from evoprune.harness.inference.pruning import Pruner


class KeepFirst(Pruner):
    """Keeps each frame's first ``budget`` tokens (``broken``: repeats the first index instead)."""

    def __init__(self, budget, broken: bool = False):
        super().__init__(budget)
        self.broken = broken

    def select(self, tokens):
        if self.budget is None:
            return None
        keep = torch.arange(self.budget).expand(tokens.frames, -1)
        return torch.zeros_like(keep) if self.broken else keep
'''
PRUNER_CONFIG = """
_target_: mypkg.keep_first.KeepFirst
name: keep_first
method: keep_first
broken: false
"""


@pytest.fixture(scope="module")
def external_package(tmp_path_factory) -> Path:
    """A package outside this repo with one pruner class and its config under mypkg/configs/pruner/."""
    root = tmp_path_factory.mktemp("ext")
    package = root / "mypkg"
    (package / "configs" / "pruner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "configs" / "__init__.py").write_text("")
    (package / "keep_first.py").write_text(textwrap.dedent(PRUNER_MODULE))
    (package / "configs" / "pruner" / "keep_first.yaml").write_text(PRUNER_CONFIG)
    return root


def _run(external: Path, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(external)}
    args = [
        "pruner=keep_first",
        "limit=1",
        "benchmark.tasks=[smoke_vqa,smoke_mcq]",
        "progress=false",
        f"output_dir={tmp_path}",
        "hydra.searchpath=[pkg://mypkg.configs]",
    ]
    return subprocess.run(
        [sys.executable, "run.py", *args, *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _samples(tmp_path: Path) -> list[dict]:
    (path,) = tmp_path.glob("*/*/keep_first-*/samples.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_pruner_from_another_package_runs_end_to_end(external_package, tmp_path):
    result = _run(external_package, tmp_path, "budget=8")
    assert result.returncode == 0, result.stderr[-3000:]
    samples = _samples(tmp_path)
    assert samples and all(s["error"] is None and s["visual_tokens_after"] == 8 for s in samples)


def test_a_pruner_breaking_the_selection_contract_is_rejected_by_name(external_package, tmp_path):
    result = _run(external_package, tmp_path, "budget=8", "pruner.broken=true")
    assert result.returncode == 1  # every sample failed, each recorded with the reason
    samples = _samples(tmp_path)
    assert samples and all("pruner 'keep_first': select" in s["error"] for s in samples)
    assert all("not strictly ascending" in s["error"] for s in samples)


def test_unknown_group_choice_lists_the_search_path_configs_too(external_package):
    argv = ["pruner=keep_firs", f"hydra.searchpath=[file://{external_package / 'mypkg' / 'configs'}]"]
    problem = check_group_choices(argv)
    assert "keep_first" in problem and "fastervlm" in problem and "mypkg/configs/pruner/" in problem
    assert check_group_choices(["pruner=keep_first", *argv[1:]]) is None


def _cfg(**fields):
    return OmegaConf.create({"name": "x", "method": "x"} | fields)


@pytest.mark.parametrize(
    "target, message",
    [
        ("nosuch_package.pruners.Mine", "module 'nosuch_package.pruners' does not import"),
        ("baselines.pruners.NoSuchPruner", "module 'baselines.pruners' has no 'NoSuchPruner'"),
        ("collections.OrderedDict", "is not a subclass of evoprune.harness.inference.pruning.Pruner"),
    ],
)
def test_a_target_that_does_not_resolve_names_module_and_class(target, message):
    with pytest.raises(ConfigError, match="pruner 'x': _target_=") as err:
        build_pruner(_cfg(_target_=target), 8)
    assert message in str(err.value)


def test_a_config_without_its_class_says_what_a_pruner_config_names():
    with pytest.raises(ConfigError, match="lacks _target_"):
        pruner_class(OmegaConf.create({"name": "x", "method": "x"}))


def test_unknown_fields_are_named_with_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) ratio; VisPrunerPruner accepts: important_ratio"):
        build_pruner(_cfg(_target_="baselines.pruners.VisPrunerPruner", ratio=0.3), 8)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) crt; accepted: schedule, .*ctr"):
        build_pruner(_cfg(_target_="evoprune.harness.inference.evoprune_pruner.EvoPrunePruner", crt=0.3), 8)
    with pytest.raises(ConfigError, match="important_ratio"):  # the class's own value check, as a config error
        build_pruner(_cfg(_target_="baselines.pruners.VisPrunerPruner", important_ratio=2.0), 8)


def test_every_shipped_pruner_config_builds_its_class():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        for path in sorted((REPO_ROOT / "configs" / "pruner").glob("*.yaml")):
            cfg = compose("config", overrides=[f"pruner={path.stem}", "budget=null"])
            pruner = build_pruner(cfg.pruner, None)
            assert type(pruner).__module__ + "." + type(pruner).__name__ == cfg.pruner._target_
            assert pruner.config_name == path.stem


def _tokens(frames: int, candidates: int) -> VisualTokens:
    return VisualTokens(
        features=torch.zeros(frames, candidates, 2),
        projected=torch.zeros(frames, candidates, 2),
        prompt="",
        layer_input=torch.zeros(frames, candidates, 2),
        vision_tower=None,
        feature_layer=-1,
        cls_tokens=0,
        pool_stride=None,
        embed_tokens=None,
        tokenizer=None,
    )


@pytest.mark.parametrize(
    "keep, message",
    [
        (torch.tensor([[0, 2, 2]]), "not strictly ascending"),
        (torch.tensor([[3, 1, 2]]), "not strictly ascending"),
        (torch.tensor([[0, 1, 9]]), "index 9, outside [0, 5]"),
        (torch.tensor([[-1, 1, 2]]), "index -1, outside [0, 5]"),
        (torch.tensor([[0, 1]]), "returned shape (1, 2); expected (frames, tokens per frame) = (1, 3)"),
        (torch.tensor([[0, 1, 2], [0, 1, 2]]), "returned shape (2, 3)"),
        (torch.tensor([[0.0, 1.0, 2.0]]), "returned a torch.float32 tensor; expected an integer tensor"),
        ([0, 1, 2], "returned list; expected an integer tensor"),
    ],
)
def test_selection_contract_is_checked_centrally(keep, message):
    pruner = Pruner(3)
    pruner.config_name = "mine"
    with pytest.raises(ValueError, match="pruner 'mine': select") as err:
        check_selection(pruner, keep, _tokens(1, 6))
    assert message in str(err.value)


def test_valid_selections_pass():
    pruner = Pruner(3)
    check_selection(pruner, None, _tokens(2, 6))
    check_selection(pruner, torch.tensor([[0, 2, 5], [1, 3, 4]]), _tokens(2, 6))
