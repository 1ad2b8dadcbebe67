"""Test doubles of the pipeline's boundaries, for tests and benchmarks (never the daemon).

`FakeDevice` is a device of a fixed capacity with a caching allocator and injectable
out-of-memory errors, as dramatiq's StubBroker stands in for a broker: the residency
manager runs against it unchanged. It can present itself as a CUDA card to the loaders
(`runs_on`, `half`) while its tensors stay in host memory. `FakeModel` is a model of a
given size with no tensors. `ManualClock` is a clock that moves only when a test moves it,
for everything that takes an injected clock (the loop, the queue, the status outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from voicedrop.pipeline.device import (
    MemoryInfo,
    _AccountingDevice,
    is_torch_module,
    move_model,
)
from voicedrop.pipeline.modelspec import Placement
from voicedrop.pipeline.precision import Card


class FakeOutOfMemory(RuntimeError):
    pass


@dataclass
class FakeModel:
    """A stand-in model of a given size; `to()` is all the manager needs of it."""

    nbytes: int
    where: str = "disk"

    def to(self, target: str) -> FakeModel:
        self.where = target
        return self


class FakeDevice(_AccountingDevice):
    """A device of `capacity` bytes with a caching allocator and injectable OOM."""

    name = "fake"

    def __init__(self, capacity: int, *, runs_on: str = "cpu", card: Card | None = None) -> None:
        """`runs_on="cuda:0", card=Card(name, capability)`: a double that presents itself
        as that CUDA card to the loaders (their tensors still live in host memory)."""
        super().__init__()
        self.capacity = capacity
        self._placement = Placement("cpu", runs_on, card)
        self.cached = 0
        self.scratch = 0
        self.release_calls = 0
        self._oom_countdown: int | None = None
        self.neighbours: dict[int, int] = {}  # other programs on the card: pid -> bytes

    def placement(self, *, warm: bool) -> Placement:
        return self._placement

    def inject_oom(self, after: int = 0) -> None:
        """Fail the allocation that comes after `after` successful ones."""
        self._oom_countdown = after

    def memory(self) -> MemoryInfo:
        allocated = self.allocated + self.scratch
        reserved = allocated + self.cached
        free = max(0, self.capacity - reserved - self.others())
        return MemoryInfo(True, allocated, reserved, free, self.capacity)

    def others(self) -> int:
        return sum(self.neighbours.values())

    def other_processes_bytes(self) -> int | None:
        return self.others()

    def allocate(self, nbytes: int) -> None:
        """Take working memory (activations) as an engine would during a stage."""
        self._check(nbytes)
        self.scratch += nbytes
        self._peak = max(self._peak, self.allocated + self.scratch)

    def free(self, nbytes: int) -> None:
        self.scratch -= nbytes
        self.cached += nbytes

    def _check(self, nbytes: int) -> None:
        if self._oom_countdown is not None:
            if self._oom_countdown == 0:
                self._oom_countdown = None
                raise FakeOutOfMemory("fake device: out of memory (injected)")
            self._oom_countdown -= 1
        if self.allocated + self.scratch + self.others() + nbytes > self.capacity:
            raise FakeOutOfMemory(f"fake device: out of memory allocating {nbytes} bytes")
        self.cached = max(0, self.cached - nbytes)

    def model_bytes(self, model: Any) -> int:
        return int(model.nbytes) if isinstance(model, FakeModel) else super().model_bytes(model)

    def to_device(self, model: Any, *, keep_host: bool = False) -> Any:
        nbytes = self.model_bytes(model)
        if id(model) not in self._placed:
            self._check(nbytes)
        self._account(model, nbytes)
        return model if _of_torch(model) else move_model(model, "device")

    def to_host(self, model: Any, *, pin: bool) -> Any:
        self.forget(model)  # a torch model stays where it is: this device's memory is RAM
        return model if _of_torch(model) else move_model(model, "host")

    def forget(self, model: Any) -> None:
        self.cached += self._placed.pop(id(model), 0)

    def release_cached(self) -> None:
        self.release_calls += 1
        self.cached = 0

    def reset_peak(self) -> None:
        self._peak = self.allocated + self.scratch

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeOutOfMemory)


class ManualClock:
    """A clock for `clock=` parameters: `now` moves only when the test sets it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class _Reading:
    total: int
    free: int
    used: int


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The calls of pynvml that voicedrop makes, over a FakeDevice, as FakeDevice fakes the
    card: its total is the device's capacity, process `pid` (this one by default) holds
    what the device has reserved plus a `context`, and `neighbour(pid, bytes)` makes
    another program hold memory — which the device then cannot allocate."""

    NVMLError = FakeNvmlError

    def __init__(self, device: FakeDevice, *, pid: int | None = None, context: int = 0) -> None:
        self.device = device
        self.pid = os.getpid() if pid is None else pid
        self.context = context
        self.withheld = False  # per-process figures withheld, as on Windows
        self.reads = 0

    def neighbour(self, pid: int, nbytes: int) -> None:
        """Another program now holds `nbytes` (0: it has gone)."""
        if nbytes:
            self.device.neighbours[pid] = nbytes
        else:
            self.device.neighbours.pop(pid, None)

    def nvmlInit(self) -> None:
        return None

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index != 0:
            raise FakeNvmlError("Invalid Argument")
        return 0

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        raise FakeNvmlError("Not Found")

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Reading:
        self.reads += 1
        mem = self.device.memory()
        ours = mem.reserved + self.context
        used = ours + self.device.others()
        return _Reading(mem.total, max(0, mem.total - used), used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        ours = self.device.memory().reserved + self.context  # none: no context, not listed
        return [_Process(self.pid, None if self.withheld else ours)] if ours else []

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[_Process]:
        return [
            _Process(pid, None if self.withheld else b) for pid, b in self.device.neighbours.items()
        ]


def _of_torch(model: Any) -> bool:
    """A torch module, or a model of torch tensors behind `tensors()` (Whisper's pipeline)."""
    return is_torch_module(model) or hasattr(model, "tensors")
