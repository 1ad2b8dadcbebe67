"""Devices: where models compute, how much memory there is, how tensors move.

Implementations share one small interface: CUDA (torch.cuda, in cuda.py), CPU (the
offline default; accounts the bytes of the tensors it was handed), and the FakeDevice of
voicedrop.testing (accounts bytes against a capacity and can inject OOM).
torch is imported lazily and only by code paths that already hold a tensor,
so the daemon starts and answers `status` without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from voicedrop.pipeline.modelspec import CPU, Placement


@dataclass(frozen=True)
class MemoryInfo:
    available: bool  # a CUDA device is in use (the stats' `available`)
    allocated: int
    reserved: int
    free: int
    total: int

    @property
    def reusable(self) -> int:
        """Bytes a new allocation can get: free memory plus this process's cached blocks."""
        return self.free + max(0, self.reserved - self.allocated)


class Device(Protocol):
    name: str

    def placement(self, *, warm: bool) -> Placement:
        """For a load: onto this device, or (`warm`) into host memory for it."""
        ...

    def memory(self) -> MemoryInfo: ...
    def model_bytes(self, model: Any) -> int: ...
    def to_device(self, model: Any, *, keep_host: bool = False) -> Any:
        """Place `model`; with `keep_host`, keep its host tensors so that `to_host` later
        costs no copy (the residency manager asks when the model will come back soon)."""
        ...

    def to_host(self, model: Any, *, pin: bool) -> Any: ...
    def forget(self, model: Any) -> None: ...
    def release_cached(self) -> None: ...
    def reset_peak(self) -> None: ...
    def peak_allocated(self) -> int: ...
    def is_oom(self, exc: BaseException) -> bool: ...
    def other_processes_bytes(self) -> int | None: ...


def is_torch_module(model: Any) -> bool:
    """Whether `model` is a torch module, without importing torch. torch may be half
    imported — another thread (the prefetcher) in the middle of its first import — and
    then has no `nn` yet: nothing can be a module of it then."""
    module_class = getattr(getattr(sys.modules.get("torch"), "nn", None), "Module", None)
    return module_class is not None and isinstance(model, module_class)


def iter_tensors(model: Any) -> Iterator[Any]:
    """Every tensor a model owns: a module's parameters and buffers, or `model.tensors()`."""
    if hasattr(model, "tensors"):
        yield from model.tensors()
        return
    if is_torch_module(model):
        yield from model.parameters()
        yield from model.buffers()


def tensor_bytes(tensors: Iterable[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


class HostCopies:
    """The host tensors of models promoted from the warm tier, kept while they are on the
    device: inference does not change weights, so sending such a model back to host memory
    is a swap of references, not a copy (accelerate's CPU offload works the same way)."""

    def __init__(self) -> None:
        # id(model) -> (module, name, is_parameter, the parameter or buffer, its host tensor)
        self._kept: dict[int, list[tuple[Any, str, bool, Any, Any]]] = {}

    def keep(self, model: Any) -> None:
        if not is_torch_module(model):
            return  # only modules: other models are moved (and copied) as a whole
        kept = []
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    kept.append((module, name, True, p, p.data))
            for name, b in module._buffers.items():
                if b is not None:
                    kept.append((module, name, False, b, b))
        self._kept[id(model)] = kept

    def restore(self, model: Any) -> bool:
        """Point the model's parameters and buffers back at the kept host tensors."""
        kept = self._kept.pop(id(model), None)
        if kept is None:
            return False
        torch = sys.modules["torch"]
        renewed: dict[int, Any] = {}  # a tied parameter stays one parameter
        for module, name, is_param, original, host in kept:
            if not is_param:
                module._buffers[name] = host
            elif module._parameters[name] is original:
                original.data = host  # moved in place (the CUDA case): same object
            else:  # the move made a new parameter
                if id(original) not in renewed:
                    renewed[id(original)] = torch.nn.Parameter(host, original.requires_grad)
                module._parameters[name] = renewed[id(original)]
        return True

    def discard(self, model: Any) -> None:
        self._kept.pop(id(model), None)

    def __contains__(self, model: Any) -> bool:
        return id(model) in self._kept


def move_model(model: Any, target: str) -> Any:
    if not hasattr(model, "to"):
        return model  # nothing on any device (e.g. the espeak engine)
    moved = model.to(target)
    return model if moved is None else moved


class _AccountingDevice:
    """Tracks the bytes of the models placed on it: what CPU and fake devices 'allocate'."""

    name = "cpu"

    def __init__(self) -> None:
        self._placed: dict[int, int] = {}
        self._peak = 0

    def placement(self, *, warm: bool) -> Placement:
        return CPU  # its tensors live in host memory, whatever it plays

    @property
    def allocated(self) -> int:
        return sum(self._placed.values())

    def model_bytes(self, model: Any) -> int:
        return tensor_bytes(iter_tensors(model))

    def _account(self, model: Any, nbytes: int) -> None:
        self._placed[id(model)] = nbytes
        self._peak = max(self._peak, self.allocated)

    def forget(self, model: Any) -> None:
        self._placed.pop(id(model), None)

    def release_cached(self) -> None:
        return None

    def reset_peak(self) -> None:
        self._peak = self.allocated

    def other_processes_bytes(self) -> int | None:
        return None  # nobody else shares this memory in a way we could name

    def peak_allocated(self) -> int:
        return max(self._peak, self.allocated)


class CPUDevice(_AccountingDevice):
    """Compute on the CPU: the warm tier and the device are the same RAM."""

    name = "cpu"
    MEMINFO_TTL_S = 1.0  # /proc/meminfo costs ~0.4 ms; reports and status ask per job

    def __init__(self) -> None:
        super().__init__()
        self._meminfo_at = -self.MEMINFO_TTL_S
        self._meminfo = (0, 0)

    def memory(self) -> MemoryInfo:
        now = time.monotonic()
        if now - self._meminfo_at >= self.MEMINFO_TTL_S:
            self._meminfo, self._meminfo_at = _meminfo(), now
        total, free = self._meminfo
        return MemoryInfo(False, self.allocated, self.allocated, free, total)

    def to_device(self, model: Any, *, keep_host: bool = False) -> Any:
        model = move_model(model, "cpu")  # the host tier is this memory: nothing to keep
        self._account(model, self.model_bytes(model))
        return model

    def to_host(self, model: Any, *, pin: bool) -> Any:
        self.forget(model)
        return move_model(model, "cpu")

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)


def _meminfo() -> tuple[int, int]:
    fields: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))
