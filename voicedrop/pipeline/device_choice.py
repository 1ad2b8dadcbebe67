"""Which device the daemon computes on: the only module that knows every kind.

Kept apart from device.py so that the CUDA module can import the shared types
without the two importing each other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from voicedrop.errors import ConfigError
from voicedrop.pipeline.device import CPUDevice, Device


def make_device(choice: str) -> Device:
    """`auto` picks CUDA only where an NVIDIA driver and torch are both installed."""
    if choice == "cpu":
        return CPUDevice()
    if choice == "cuda":
        if importlib.util.find_spec("torch") is None:
            raise ConfigError("device = 'cuda' needs torch installed", field="device")
        from voicedrop.pipeline.cuda import CudaDevice

        return CudaDevice()
    nvidia = Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()
    if nvidia and importlib.util.find_spec("torch") is not None:
        from voicedrop.pipeline.cuda import CudaDevice

        try:
            return CudaDevice()
        except ConfigError:
            return CPUDevice()
    return CPUDevice()
