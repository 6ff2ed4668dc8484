"""`evoprune.device_checks`: a check raises at once outside `deferred_checks`, after the answer inside it."""

import pytest
import torch
from PIL import Image

from evoprune.device_checks import deferred_checks, require
from evoprune.harness.inference.pipeline import generate
from evoprune.harness.inference.pruning import Pruner


def test_outside_a_deferral_a_failed_check_raises_at_once_with_its_message():
    require(torch.tensor(True), "unused")
    with pytest.raises(TypeError, match="^bad input$"):
        require(torch.tensor(False), lambda: "bad input", TypeError)


def test_inside_a_deferral_checks_wait_and_the_first_failure_raises():
    built = []

    def message(text):
        def build():
            built.append(text)
            return text

        return build

    with deferred_checks() as checks:
        require(torch.tensor(True), message("first"))
        require(torch.tensor(False), message("second"))
        require(torch.tensor(False), message("third"))
        assert built == []  # nothing read, nothing raised yet
    with pytest.raises(ValueError, match="^second$"):
        checks.raise_failed()
    assert built == ["second"]  # a message is built only for the check that raises
    require(torch.tensor(True), "after the block: checked at once again")


class _OutOfRange(Pruner):
    def select(self, tokens):
        frames, candidates = tokens.projected.shape[:2]
        return torch.arange(candidates - self.budget + 1, candidates + 1).expand(frames, -1)  # one past the end


def test_a_selection_outside_the_candidates_fails_the_sample_by_the_check_not_the_indexing(tiny_loaded):
    """The pipeline reads the contract's checks after the answer; the indices it lays out meanwhile are
    clamped, so a bad one never reaches an index kernel (a device-side assert on a GPU)."""
    pruner = _OutOfRange(8)
    pruner.config_name = "edge"
    with pytest.raises(ValueError, match=r"^pruner 'edge': select returned index 576, outside \[0, 575\]$"):
        generate(tiny_loaded, pruner, Image.new("RGB", (64, 64)), "What is it?", max_new_tokens=2, until=[])
