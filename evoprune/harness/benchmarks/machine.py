"""What a benchmark ran on, in words, for its files. Needs torch and transformers only."""

from __future__ import annotations

import os
import platform

import torch


def device_label(device: torch.device) -> str:
    """The GPU's name, or the CPU with its cores and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def machine_info(device: torch.device, dtype: torch.dtype) -> str:
    """The device, the dtype and the software a measurement ran with."""
    import transformers

    return (
        f"{device_label(device)}; {str(dtype).removeprefix('torch.')}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
