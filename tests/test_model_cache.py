"""The runner's one-model cache: a kept model is reused, a new one frees the old one, and the garbage
collector's freeze never takes a model with it."""

import gc
import weakref

import torch
from conftest import compose_config

from evoprune.harness.evaluation import runner


def test_a_new_model_frees_the_last_one_even_inside_a_reference_cycle():
    cfg = compose_config("model=tiny_llava").model
    cpu = torch.device("cpu")
    first = runner.cached_model(cfg, cpu, torch.float32, 0)
    assert runner.cached_model(cfg, cpu, torch.float32, 0) is first  # the same key: kept
    assert gc.get_freeze_count() > 0  # what was alive before the load is out of the collector's sight
    first.model.__dict__["cycle"] = [first.model]  # freed only by a collection that sees it
    dropped = weakref.ref(first.model)
    del first
    second = runner.cached_model(cfg, cpu, torch.float32, 1)  # another seed: another model
    assert dropped() is None
    assert runner.cached_model(cfg, cpu, torch.float32, 1) is second
