"""Dispatched aten ops and would-be host syncs of a block of code: the CPU proxy for a GPU's launches.

At batch 1 on a GPU, each dispatched aten op is about one kernel launch, and launch overhead (not
arithmetic) sets the time of a small model; an op whose result the host must read makes the host wait
for the device (a sync) and empties the launch queue. On CPU nothing waits, so `count_ops` records
the ops that would: reading a value (``.item()``, ``int(t)``, ``bool(t)``, a 0-dim tensor used as an
index: ``_local_scalar_dense`` or, in inference mode, ``item``); shapes that depend on values
(``nonzero``, ``masked_select``, indexing or assigning through a boolean mask, ``unique``,
``bincount``, ``repeat_interleave`` without ``output_size``); comparisons returning a Python bool
(``equal``, ``is_nonzero``); copies to the host (``Tensor.tolist``/``numpy``). Python-level reads
(``int``/``float``/``bool`` of a tensor, ``item``, ``tolist``, ``numpy``), which CPU tensors in
inference mode serve without dispatching anything, are wrapped while counting. It cannot see a sync
hidden inside a library kernel.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from evoprune.harness.common.paths import REPO_ROOT

_OUR_CODE = (str(REPO_ROOT / "evoprune") + "/", str(REPO_ROOT / "baselines") + "/")
_THIS_FILE = str(Path(__file__).resolve())

# Ops whose result the host reads (or whose output shape depends on values): a sync on a GPU.
SYNC_OPS = frozenset(
    {
        "aten._local_scalar_dense",
        "aten.item",  # what inference mode dispatches for a tensor index instead of _local_scalar_dense
        "aten.nonzero",
        "aten.masked_select",
        "aten.unique",
        "aten._unique",
        "aten._unique2",
        "aten.unique_dim",
        "aten.unique_consecutive",
        "aten.bincount",
        "aten.equal",
        "aten.is_nonzero",
    }
)
_BOOL_INDEXED = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})
# Python-level reads of values: counted once here (the op they dispatch, if any, is not counted again).
# Inference mode reads ``int(t)`` without dispatching anything, so these must be caught at this level.
_HOST_READS = ("tolist", "numpy", "item", "__int__", "__float__", "__bool__", "__index__")
# Not view-tagged, yet no kernel runs: a view under another name, or an empty-allocation.
_NO_KERNEL = frozenset({"aten._unsafe_view", "aten.empty", "aten.empty_like", "aten.empty_strided"})


@dataclass
class OpCount:
    """What ran inside one `count_ops` block."""

    ops: Counter = field(default_factory=Counter)  # op name (overload dropped) -> count, ops that run a kernel
    views: Counter = field(default_factory=Counter)  # the same for views and allocations: no kernel, no launch
    syncs: Counter = field(default_factory=Counter)  # "op at file:line" (our code's frame) -> count

    @property
    def total(self) -> int:
        """Ops that run a kernel: about the launches on a GPU."""
        return sum(self.ops.values())

    @property
    def sync_total(self) -> int:
        return sum(self.syncs.values())


def _is_sync(name: str, args, kwargs) -> bool:
    if name in SYNC_OPS:
        return True
    if name == "aten.repeat_interleave":
        return kwargs.get("output_size") is None and not (len(args) > 3 and args[3] is not None)
    if name in _BOOL_INDEXED:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    return False


def _our_frame() -> str:
    """file:line of the innermost caller in evoprune/ or baselines/ (outside this module), else '?'."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_OUR_CODE) and path != _THIS_FILE:
            return f"{Path(path).relative_to(REPO_ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class _Counter(TorchDispatchMode):
    def __init__(self, count: OpCount):
        super().__init__()
        self.count = count
        self.reading = 0  # > 0 inside a wrapped Python-level read, which counted itself

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket._qualified_op_name.replace("::", ".")
        kind = self.count.views if func.is_view or name in _NO_KERNEL else self.count.ops
        kind[name] += 1
        if not self.reading and _is_sync(name, args, kwargs):
            self.count.syncs[f"{name} at {_our_frame()}"] += 1
        return func(*args, **kwargs)


@contextmanager
def count_ops():
    """``with count_ops() as count: ...`` counts the block's dispatched ops and would-be syncs."""
    count = OpCount()
    mode = _Counter(count)
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

    def wrapped(name):
        original = originals[name]

        def host_read(self, *args, **kwargs):
            count.syncs[f"Tensor.{name} at {_our_frame()}"] += 1
            mode.reading += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                mode.reading -= 1

        return host_read

    try:
        for name in _HOST_READS:
            setattr(torch.Tensor, name, wrapped(name))
        with mode:
            yield count
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
