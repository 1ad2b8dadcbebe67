"""The CUDA device: torch.cuda memory stats and peaks, pinned-memory tier moves, NVML.

Imported only when a CUDA device is chosen, and imports torch only when built.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from voicedrop.errors import ConfigError
from voicedrop.pipeline.device import (
    HostCopies,
    MemoryInfo,
    is_torch_module,
    iter_tensors,
    move_model,
    tensor_bytes,
)
from voicedrop.pipeline.modelspec import Placement
from voicedrop.pipeline.precision import Card


def _to_pinned_host(model: Any) -> Any:
    """Copy a module's tensors straight into pinned host memory (one copy, not two), so that
    the next promote is an asynchronous DMA; tensors already pinned stay where they are.
    Other models: plain `to('cpu')`."""
    if not is_torch_module(model):
        return move_model(model, "cpu")
    torch = sys.modules["torch"]

    def pinned(t: Any) -> Any:
        if t.device.type == "cpu" and t.is_pinned():
            return t  # a kept host copy, pointed back at: nothing to move
        host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
        return host.copy_(t)

    return model._apply(pinned)


class CudaDevice:
    """A CUDA GPU through torch.cuda (NVML, when installed, adds other processes' use)."""

    def __init__(self, index: int = 0) -> None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but torch sees no CUDA device", field="device")
        self._torch = torch
        self.index = index
        self.name = f"cuda:{index}"
        self._copies = HostCopies()
        props = torch.cuda.get_device_properties(index)  # what precision.py's rules read
        self.card = Card(torch.cuda.get_device_name(index), (props.major, props.minor))

    def placement(self, *, warm: bool) -> Placement:
        return Placement("cpu" if warm else self.name, self.name, self.card)

    def memory(self) -> MemoryInfo:
        cuda = self._torch.cuda
        free, total = cuda.mem_get_info(self.index)
        return MemoryInfo(
            True, cuda.memory_allocated(self.index), cuda.memory_reserved(self.index), free, total
        )

    def model_bytes(self, model: Any) -> int:
        return tensor_bytes(iter_tensors(model))

    def to_device(self, model: Any, *, keep_host: bool = False) -> Any:
        if isinstance(model, self._torch.nn.Module):
            if keep_host:
                self._copies.keep(model)
            model = model.to(self.name, non_blocking=True)  # async from pinned memory
        else:
            model = move_model(model, self.name)
        self._torch.cuda.synchronize(self.index)
        return model

    def to_host(self, model: Any, *, pin: bool) -> Any:
        """Back to host memory: where the host tensors were kept, by pointing the module
        back at them (no copy; what inference added on the device is copied as usual)."""
        if self._copies.restore(model):
            model = _to_pinned_host(model)
        else:
            model = _to_pinned_host(model) if pin else move_model(model, "cpu")
        self._torch.cuda.synchronize(self.index)
        return model

    def forget(self, model: Any) -> None:
        self._copies.discard(model)

    def other_processes_bytes(self) -> int | None:
        """GPU memory held by other processes (NVML), or None without nvidia-ml-py.

        mem_get_info already counts it in `free`; this says who took it, so a
        'does not fit' report can blame a neighbour rather than our models.
        """
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            return sum(p.usedGpuMemory or 0 for p in procs if p.pid != os.getpid())
        except pynvml.NVMLError:
            return None

    def release_cached(self) -> None:
        self._torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        self._torch.cuda.reset_peak_memory_stats(self.index)

    def peak_allocated(self) -> int:
        return int(self._torch.cuda.max_memory_allocated(self.index))

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, self._torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)
