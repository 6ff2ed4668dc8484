"""Host syncs per answer, counted on CPU (`evoprune.harness.common.op_count`): a pruner's own code may not add one."""

import pytest
import torch
from conftest import compose_config
from PIL import Image

from evoprune.harness.common.op_count import count_ops
from evoprune.harness.inference.pipeline import generate
from evoprune.harness.inference.pruning import build_pruner

# Syncs still left in a method's own files: DART's LLM-side selection reads the image's place in the prompt
# (one read) and its official pivot order's positions (a Python set orders them) on the host.
REMAINING = {"dart": 2}
PRUNERS = ["evoprune", "tome", "divprune", "cdpruner", "visionzip", "random", "pooling", *REMAINING]


def _syncs_by_site(loaded, pruner_name):
    pruner = build_pruner(compose_config(f"pruner={pruner_name}").pruner, None if pruner_name == "none" else 32)
    image = Image.new("RGB", (300, 200), (10, 200, 30))
    with count_ops() as count:
        generate(loaded, pruner, image, "What colour is it?", max_new_tokens=1, until=[])
    return count.syncs


# Native's answer of one token: the tokenizer's host tensors (3 reads: no device sync on a GPU), the
# generated token, and two counts read after the answer.
NATIVE_READS = 6


def test_the_pipeline_reads_values_only_where_it_must(tiny_loaded):
    assert sum(_syncs_by_site(tiny_loaded, "none").values()) <= NATIVE_READS


@pytest.mark.parametrize("pruner", PRUNERS)
def test_a_pruners_own_code_adds_no_host_sync(tiny_loaded, pruner):
    own = {site: n for site, n in _syncs_by_site(tiny_loaded, pruner).items() if " at baselines/" in site}
    assert sum(own.values()) <= REMAINING.get(pruner, 0), own


@pytest.mark.parametrize("pruner", ["fastervlm", "vispruner"])
def test_value_checks_are_read_once_after_the_answer(tiny_loaded, pruner):
    """The selection contract's checks and FasterVLM's / VisPruner's finiteness checks: one read, at the end."""
    syncs = _syncs_by_site(tiny_loaded, pruner)
    checks = {site: n for site, n in syncs.items() if "device_checks.py" in site or "pruning.py" in site}
    assert list(checks.values()) == [1] and "evoprune/device_checks.py" in next(iter(checks)), syncs


def test_the_counter_sees_a_host_sync_put_back(tiny_loaded, monkeypatch):
    """DivPrune with its picks as 0-dim tensors again (an index read on the host per pick) is caught."""
    from baselines import divprune

    def order_with_host_reads(features, budget):
        distance = divprune.cosine_distance(features)
        picks = [int(torch.argmax(distance.sum(0)))]
        return torch.tensor(picks + [i for i in range(features.shape[0]) if i not in picks][: budget - 1])

    monkeypatch.setattr(divprune, "divprune_order", order_with_host_reads)
    own = {site: n for site, n in _syncs_by_site(tiny_loaded, "divprune").items() if " at baselines/" in site}
    assert sum(own.values()) >= 1
