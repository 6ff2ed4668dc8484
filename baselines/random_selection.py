"""Random selection, the sanity floor of token pruning: ``budget`` tokens per frame drawn uniformly.

Seeded per sample: the generator's seed is a hash of the run's seed and the sample's id
(``<task>/<doc_id>``), so a sample keeps the same tokens on every device, in every resumed run and
whatever the order of samples, and two samples with the same question still differ.
"""

from __future__ import annotations

import hashlib

import torch


def sample_seed(seed: int, sample_id: str) -> int:
    """A 63-bit seed from the run's ``seed`` and a sample id (SHA-256: stable across processes)."""
    digest = hashlib.sha256(f"{seed}/{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def random_select(frames: int, candidates: int, budget: int, seed: int) -> torch.Tensor:
    """(frames, budget) ascending indices, each frame ``budget`` distinct draws from ``candidates``."""
    generator = torch.Generator().manual_seed(seed)
    draws = [torch.randperm(candidates, generator=generator)[:budget] for _ in range(frames)]
    return torch.stack(draws).sort(dim=-1).values
