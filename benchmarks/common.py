"""What the benchmarks share: one global peak over the manager's per-block resets, the machine."""

from __future__ import annotations

import platform
from typing import Any

from voicedrop.pipeline.device import Device


class PeakTracker:
    """Wraps a device so that the manager's per-block peak resets fold into one global peak."""

    def __init__(self, device: Device) -> None:
        self.inner = device
        self.peak = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset_peak(self) -> None:
        self.peak = max(self.peak, self.inner.peak_allocated())
        self.inner.reset_peak()

    def global_peak(self) -> int:
        return max(self.peak, self.inner.peak_allocated())


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    import os

    return f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
