"""The card as NVML sees it: its memory, and which processes hold how much of it.

Read through nvidia-ml-py (the `nvml` extra) without creating a CUDA context, so the
daemon — which never imports torch — can say what the card holds while no worker lives,
and the device worker can see the other programs on the card (an editor's NLE, a game,
another model server) and make room for them (pipeline/neighbours.py).

Which card: the first of `CUDA_VISIBLE_DEVICES` (an index, or a `GPU-…` UUID), else
index 0. Where NVML cannot be read — no NVIDIA driver, the extra not installed, a MIG
slice, per-process figures withheld (Windows, some containers) — `view()` is None and
`absent` says why; callers fall back to the free memory the device reports.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from voicedrop.config import GB


@dataclass(frozen=True)
class Holder:
    """A process holding memory on the card."""

    pid: int
    name: str
    used: int  # bytes

    def describe(self) -> str:
        who = f"{self.name} (pid {self.pid})" if self.name else f"pid {self.pid}"
        return f"{who} holds {self.used / GB:.2f} GB"


@dataclass(frozen=True)
class CardView:
    """One reading of the card."""

    total: int
    free: int
    holders: tuple[Holder, ...]

    def others(self, ours: Collection[int]) -> tuple[Holder, ...]:
        """The holders that are not voicedrop's processes, largest first."""
        found = [h for h in self.holders if h.pid not in ours]
        return tuple(sorted(found, key=lambda h: -h.used))

    def held_by(self, ours: Collection[int]) -> int:
        return sum(h.used for h in self.holders if h.pid in ours)

    def as_dict(self, ours: Collection[int]) -> dict[str, Any]:
        """For status.json: the card's total and free bytes, ours, and the others by pid."""
        return {
            "total_bytes": self.total,
            "free_bytes": self.free,
            "ours_bytes": self.held_by(ours),
            "others": [{"pid": h.pid, "name": h.name, "bytes": h.used} for h in self.others(ours)],
        }


class Card(Protocol):
    absent: str | None  # why there is no reading (None while readings come)

    def view(self) -> CardView | None: ...


class NvmlCard:
    """The card through NVML; `nvml` is the pynvml module (a double in tests)."""

    def __init__(self, nvml: Any = None, which: str | None = None) -> None:
        self._nvml = nvml
        self._which = which if which is not None else _visible_card()
        self._handle: Any = None
        self.absent: str | None = None

    def view(self) -> CardView | None:
        if self._handle is None and not self._open():
            return None
        nvml = self._nvml
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(self._handle)
            used: dict[int, int] = {}
            for listing in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                for proc in listing(self._handle):
                    if proc.usedGpuMemory is None:  # withheld: per-process figures unknown
                        self.absent = "NVML does not give per-process memory on this system"
                        return None
                    # a process in both lists (CUDA and graphics) is one holder
                    used[proc.pid] = max(used.get(proc.pid, 0), int(proc.usedGpuMemory))
        except nvml.NVMLError as exc:
            self.absent = f"NVML: {exc}"
            return None
        self.absent = None
        holders = tuple(Holder(pid, _process_name(pid), b) for pid, b in sorted(used.items()))
        return CardView(int(mem.total), int(mem.free), holders)

    def _open(self) -> bool:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError:
                self.absent = "nvidia-ml-py is not installed (pip install 'voicedrop[nvml]')"
                return False
        nvml = self._nvml
        if self._which.startswith("MIG-"):
            self.absent = "a MIG slice: NVML gives no per-process memory for it"
            return False
        try:
            nvml.nvmlInit()
            if self._which.startswith("GPU-"):
                self._handle = nvml.nvmlDeviceGetHandleByUUID(self._which)
            else:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(int(self._which))
        except nvml.NVMLError as exc:
            self.absent = f"NVML: {exc}"
            return False
        return True


def card_status(
    card: Card | None, view: CardView | None, ours: Collection[int], headroom: int
) -> dict[str, Any]:
    """The card for status.json: a reading (ours and the others' bytes), or why none."""
    if view is None:
        return {"nvml": False, "why": card.absent if card is not None else "no card"}
    return {"nvml": True, "headroom_bytes": headroom, **view.as_dict(ours)}


def _visible_card() -> str:
    """The card CUDA calls device 0, as NVML names it: an index or a UUID."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return first if first.isdigit() or first.startswith(("GPU-", "MIG-")) else "0"


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""  # another namespace's process, or gone
