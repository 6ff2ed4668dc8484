"""Value checks that do not stall the device: `require(ok, message)` with ``ok`` a 0-dim bool tensor.

Outside `deferred_checks` a failed check raises at once (reading ``ok`` is a host sync on an accelerator).
Inside it — the pipeline wraps each generation in one — checks are collected and read together, with one
sync, by `DeferredChecks.raise_failed` after the answer: a failed check still fails the sample, with the
same error, instead of stalling the device mid-pipeline on every sample. Work done after a failed check is
wasted, never used: the answer is dropped when the check raises.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar("deferred_checks", default=None)


def require(ok: torch.Tensor, message: str | Callable[[], str], error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` unless the 0-dim bool ``ok`` holds (``message`` may be a callable building it
    from tensors, called only when the check fails); deferred inside `deferred_checks`."""
    pending = _pending.get()
    if pending is not None:
        pending.append((ok, message, error))
    elif not bool(ok):
        raise error(message() if callable(message) else message)


@dataclass
class DeferredChecks:
    pending: list = field(default_factory=list)

    def raise_failed(self) -> None:
        """Raise the first failed check's error (one host read for all of them)."""
        if not self.pending:
            return
        flags = torch.stack([ok.reshape(()).to(self.pending[0][0].device) for ok, _, _ in self.pending]).tolist()
        for flag, (_, message, error) in zip(flags, self.pending, strict=True):
            if not flag:
                raise error(message() if callable(message) else message)


@contextmanager
def deferred_checks() -> Iterator[DeferredChecks]:
    """Collect the `require` checks made inside; the caller reads them with `raise_failed`."""
    checks = DeferredChecks()
    token = _pending.set(checks.pending)
    try:
        yield checks
    finally:
        _pending.reset(token)
