"""Which device the daemon computes on: the only module that knows every kind.

Kept apart from device.py so that the CUDA module can import the shared types
without the two importing each other. Choosing the device is also where the process
commits to computing with torch, so the one process-wide setting of torch's CPU kernels
that a long-running daemon needs is made here (see `cap_kernel_cache`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from voicedrop.errors import ConfigError
from voicedrop.pipeline.device import CPUDevice, Device

# oneDNN, which runs torch's convolutions on the CPU, caches a compiled kernel for every
# input shape it meets, up to 1,024 of them. Every job's text gives the vocoders and RVC's
# convolutions new lengths, and those kernels (with their scratch buffers) are what made a
# daemon's resident memory creep by ~1.5 GB over the first 150 RVC jobs on the tiny models.
# Within a job the shapes repeat (an F5 ODE step, a vocoder's layers), so a few entries
# keep the reuse that matters (120 RVC jobs took 122 s with 8 entries, 119 s with 1,024:
# within the noise).
KERNEL_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
KERNEL_CACHE_ENTRIES = 8


def cap_kernel_cache() -> None:
    """Cap oneDNN's kernel cache for this process, unless the user chose a size.

    oneDNN reads the variable when it first builds a kernel, so this works after torch is
    imported as long as no convolution ran yet: the daemon and the cluster workers call it
    (through make_device) before any engine loads.
    """
    os.environ.setdefault(KERNEL_CACHE_ENV, str(KERNEL_CACHE_ENTRIES))


def make_device(choice: str) -> Device:
    """`auto` picks CUDA only where an NVIDIA driver and torch are both installed."""
    cap_kernel_cache()
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
