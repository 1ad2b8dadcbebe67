"""The tier table: where each model is (device, host memory, disk) and the moves between.

The residency manager decides *when* a model moves (admission, policy, the OOM
ladder); this table performs the moves — load, promote, demote, evict, drop —
keeps the warm tier within its byte budget, scores models for eviction, and
turns every move into a structured log event and an entry in the job's report.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from voicedrop.pipeline.device import Device
from voicedrop.pipeline.modelspec import ModelSpec, Tier
from voicedrop.report import ModelEvent, ModelView

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Entry:
    spec: ModelSpec
    model: Any = None
    tier: Tier = "disk"
    nbytes: int = 0
    loads: int = 0
    promotes: int = 0
    last_load_s: float | None = None
    last_promote_s: float | None = None
    last_peak: int | None = None
    last_used: float = 0.0
    in_use: int = 0
    loading: threading.Event | None = None  # set while the prefetch thread reads it from disk
    host_copy: bool = False  # on the device with its host tensors kept (demote: no copy)
    keep_alive: float | None = None  # the last job's own keep-alive (s; inf: forever; 0: none)


@dataclass
class TierTable:
    device: Device
    clock: Callable[[], float]
    warm_tier: bool = True
    warm_budget: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    sinks: list[list[ModelEvent]] = field(default_factory=list)
    reserved: int = 0  # warm-tier bytes promised to loads in flight (prefetch)
    # one model is built at a time: loaders patch process-wide state (nn.Module, stdout)
    building: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, spec: ModelSpec) -> Entry:
        entry = self.entries.setdefault(spec.key, Entry(spec))
        entry.spec = spec
        return entry

    def views(self) -> dict[str, ModelView]:
        return {
            key: ModelView(
                tier=e.tier,
                device_bytes=e.nbytes if e.tier == "device" else 0,
                host_bytes=e.nbytes if e.tier == "host" else 0,
                loads=e.loads,
                promotes=e.promotes,
                last_load_s=e.last_load_s,
                last_peak_bytes=e.last_peak,
                pinned=e.spec.pinned,
                keep_alive_s=None
                if e.keep_alive is None
                else -1.0
                if e.keep_alive == float("inf")
                else e.keep_alive,
            )
            for key, e in self.entries.items()
        }

    # ---- onto the device -----------------------------------------------------------------

    def place(self, entry: Entry, keep_host: bool = False) -> None:
        """Onto the device: a promote from host memory (keeping the host tensors when
        `keep_host` and they fit the warm budget), or a load from disk."""
        started = self.clock()
        if entry.tier == "host":
            entry.host_copy = keep_host and self.host_bytes() <= self.warm_budget
            entry.model = self.device.to_device(entry.model, keep_host=entry.host_copy)
            entry.tier = "device"
            entry.promotes += 1
            entry.last_promote_s = self.clock() - started
            self.emit("promote", entry, "host", "device", entry.last_promote_s)
            return
        with self.building:
            model = entry.spec.load(self.device.placement(warm=False))
        entry.model = self.device.to_device(model)
        entry.tier = "device"
        entry.nbytes = self.device.model_bytes(entry.model)
        entry.loads += 1
        entry.last_load_s = self.clock() - started
        self.emit("load", entry, "disk", "device", entry.last_load_s)

    def abandon(self, entry: Entry) -> None:
        """After a failed placement: send a half-moved model back to host, or forget it."""
        if entry.tier == "host" and entry.model is not None:
            entry.model = self.device.to_host(entry.model, pin=True)
        elif entry.tier != "host":
            if entry.model is not None:
                self.device.forget(entry.model)
            entry.model, entry.tier = None, "disk"
        gc.collect()
        self.device.release_cached()

    def device_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values() if e.tier == "device")

    def value(self, entry: Entry) -> float:
        """What keeping a model is worth: its reload cost, discounted by idle time."""
        cost = entry.last_promote_s if self.warm_tier and entry.last_promote_s else None
        cost = cost or entry.last_load_s or 1.0
        return cost / (1.0 + max(0.0, self.clock() - entry.last_used))

    def victim(self, exclude: frozenset[str], tier: Tier = "device") -> Entry | None:
        candidates = [
            e
            for e in self.entries.values()
            if e.tier == tier and not e.in_use and not e.spec.pinned and e.spec.key not in exclude
        ]
        return min(candidates, key=self.value, default=None)

    # ---- leaving the device ------------------------------------------------------------

    def leave_device(
        self, entry: Entry, event: Literal["demote", "evict", "drop"], why: str
    ) -> None:
        # a kept host copy is already counted in the warm tier: no room to make, no copy
        room = entry.host_copy or (self.warm_tier and self.warm_room(entry))
        if event == "drop" or not room:
            self.drop(entry, "drop" if event != "evict" else "evict", why)
            return
        started = self.clock()
        entry.model = self.device.to_host(entry.model, pin=True)
        entry.tier, entry.host_copy = "host", False
        self.emit(event, entry, "device", "host", self.clock() - started, why)

    def host_bytes(self) -> int:
        """Host memory the warm tier holds: its models, and the kept copies of promoted ones."""
        return sum(
            e.nbytes
            for e in self.entries.values()
            if e.tier == "host" or (e.tier == "device" and e.host_copy)
        )

    def warm_room(
        self, entry: Entry, nbytes: int | None = None, keep: frozenset[str] = frozenset()
    ) -> bool:
        """Make room for `nbytes` (default: the entry's) in the warm tier by dropping its
        least valuable models but `keep`; False if it cannot be made."""
        need = entry.nbytes if nbytes is None else nbytes
        if need > self.warm_budget:
            return False
        while self.host_bytes() + self.reserved + need > self.warm_budget:
            victim = self.victim(exclude=keep | {entry.spec.key}, tier="host")
            if victim is None:
                return False
            self.drop(victim, "evict", f"warm tier full for {entry.spec.key}")
        return True

    def prefetched(self, entry: Entry, model: Any, seconds: float) -> None:
        """A model read from disk into host memory by the prefetch thread."""
        entry.model = self.device.to_host(model, pin=True)
        entry.tier = "host"
        entry.nbytes = self.device.model_bytes(entry.model)
        entry.loads += 1
        entry.last_load_s = seconds
        entry.last_used = self.clock()
        self.emit("prefetch", entry, "disk", "host", seconds, "next in the queue")

    def drop(self, entry: Entry, event: Literal["drop", "evict"], why: str) -> None:
        started = self.clock()
        src = entry.tier
        if entry.model is not None:
            self.device.forget(entry.model)
        entry.model, entry.tier, entry.host_copy = None, "disk", False
        self.emit(event, entry, src, "disk", self.clock() - started, why)

    def emit(
        self, kind: str, entry: Entry, src: Tier, dst: Tier, seconds: float, why: str | None = None
    ) -> None:
        event = ModelEvent.model_validate(
            {
                "event": kind,
                "key": entry.spec.key,
                "from": src,
                "to": dst,
                "bytes": entry.nbytes,
                "seconds": round(seconds, 6),
                "reason": why,
                "at": round(time.time(), 3),
                "allocated": self.device.memory().allocated,
            }
        )
        for sink in self.sinks:
            sink.append(event)
        log.info(
            f"model.{kind}",
            model=entry.spec.key,
            src=src,
            dst=dst,
            bytes=entry.nbytes,
            seconds=round(seconds, 4),
            reason=why,
        )
