"""The residency manager: which model weights sit on the device, in host memory, or on disk.

`acquire(spec)` puts a model on the compute device for the length of a block;
on exit the policy decides whether it stays, is demoted to the warm tier
(host memory, pinned under CUDA: the next acquire is a host-to-device copy,
not a rebuild) or is dropped. Before a load, admission predicts the model's
footprint (measured peaks from earlier runs, else the spec's estimate) and
evicts by score until it fits, or refuses early with the numbers. An
out-of-memory error runs a ladder: release cached blocks, evict the others,
retry once. Every move is a structured log event and an entry in the report.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import structlog

from voicedrop.config import GB
from voicedrop.errors import DoesNotFitError, OutOfMemoryError, ResidencyError
from voicedrop.pipeline.device import Device
from voicedrop.pipeline.footprints import FootprintStore
from voicedrop.pipeline.modelspec import ModelSpec, Tier
from voicedrop.pipeline.policies import Policy
from voicedrop.report import ModelEvent, ModelView, VramStats

log = structlog.get_logger(__name__)


@dataclass
class _Entry:
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


@dataclass
class ResidencyManager:
    device: Device
    policy: Policy
    low_vram_mode: bool = False
    warm_tier: bool = True
    warm_budget: int = 8 * GB
    headroom: int = 0
    footprints: FootprintStore = field(default_factory=lambda: FootprintStore(None))
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _sinks: list[list[ModelEvent]] = field(default_factory=list)

    # ---- the contract -------------------------------------------------------------------

    @contextmanager
    def acquire(self, spec: ModelSpec) -> Iterator[Any]:
        entry = self._entries.setdefault(spec.key, _Entry(spec))
        entry.spec = spec
        if entry.in_use:  # nested acquire of a model already on the device
            entry.in_use += 1
            try:
                yield entry.model
            finally:
                entry.in_use -= 1
            return
        base = self._bring_to_device(entry)
        entry.in_use += 1
        try:
            yield entry.model
        finally:
            entry.in_use -= 1
            entry.last_used = self.clock()
            peak = max(self.device.peak_allocated() - base, entry.nbytes)
            entry.last_peak = peak
            self.footprints.record(spec.key, peak)
            if entry.tier == "device" and not self.policy.keeps_after_use():
                self._leave_device(entry, "demote" if self.warm_tier else "drop", "policy low")

    def get_vram_usage(self) -> dict[str, Any]:
        """The seed's stats dict, exactly its keys."""
        mem = self.device.memory()
        stats = VramStats(
            available=mem.available,
            low_vram_mode=self.low_vram_mode,
            allocated_gb=round(mem.allocated / GB, 3),
            reserved_gb=round(mem.reserved / GB, 3),
            free_gb=round(mem.free / GB, 3),
            total_gb=round(mem.total / GB, 3),
            cached_models=sum(1 for e in self._entries.values() if e.tier != "disk"),
        )
        return stats.model_dump()

    def models(self) -> dict[str, ModelView]:
        """The extended per-model view: tier, bytes per tier, loads, promotes, peaks."""
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
            )
            for key, e in self._entries.items()
        }

    def resident_keys(self, tier: Tier = "device") -> set[str]:
        return {k for k, e in self._entries.items() if e.tier == tier}

    @contextmanager
    def recording(self) -> Iterator[list[ModelEvent]]:
        """Collect the events of a block (one job) in the order they happen."""
        events: list[ModelEvent] = []
        self._sinks.append(events)
        try:
            yield events
        finally:
            self._sinks.remove(events)

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, OutOfMemoryError) or self.device.is_oom(exc)

    def relieve(self, keep: frozenset[str] = frozenset()) -> None:
        """The OOM ladder's first rungs: evict every idle model but `keep`, free cached blocks."""
        for entry in list(self._entries.values()):
            if entry.tier == "device" and not entry.in_use and entry.spec.key not in keep:
                self._leave_device(entry, "evict", "out of memory")
        gc.collect()
        self.device.release_cached()

    def close(self) -> None:
        """Drop every model (shutdown)."""
        for entry in list(self._entries.values()):
            if entry.tier != "disk":
                self._drop(entry, "drop", "shutdown")
        self.device.release_cached()

    # ---- admission and placement ---------------------------------------------------------

    def predict(self, spec: ModelSpec) -> int:
        """Bytes a use of `spec` is expected to take on the device: weights + working memory."""
        measured = self.footprints.get(spec.key)
        entry = self._entries.get(spec.key)
        if measured is not None:
            guess = measured
        elif spec.expected_bytes is not None:
            guess = spec.expected_bytes
        elif entry is not None and entry.nbytes:
            guess = entry.nbytes
        elif spec.checkpoint is not None and spec.checkpoint.exists():
            guess = int(spec.checkpoint.stat().st_size * 1.2)
        else:
            guess = 0
        return guess

    def _bring_to_device(self, entry: _Entry) -> int:
        """Place the model; return the allocation it is measured from (others' bytes).

        The peak is reset after eviction, so the footprint recorded at release
        is this model's weights and working memory, whatever left to make room.
        """
        if entry.tier == "device":
            self.device.reset_peak()
            return self.device.memory().allocated - entry.nbytes
        self._make_room(entry, self.predict(entry.spec))
        base = self.device.memory().allocated
        self.device.reset_peak()
        try:
            self._place(entry)
        except Exception as exc:
            if not self.device.is_oom(exc):
                self._abandon(entry)
                raise
            log.warning("model.oom", model=entry.spec.key, error=str(exc), rung="evict and retry")
            self._abandon(entry)
            self.relieve(keep=frozenset({entry.spec.key}))
            base = self.device.memory().allocated
            self.device.reset_peak()
            try:
                self._place(entry)
            except Exception as exc2:
                self._abandon(entry)
                if self.device.is_oom(exc2):
                    raise OutOfMemoryError(
                        f"out of memory placing '{entry.spec.key}' even after evicting "
                        f"the other models: {exc2}"
                    ) from exc2
                raise
        return base

    def _make_room(self, entry: _Entry, need: int) -> None:
        """Evict by score until `need` (plus headroom on the device) fits, then hand the
        freed blocks back. A fixed budget counts model bytes only; `auto` already
        keeps the headroom free (policies.BudgetPolicy).

        Only here and in the OOM ladder is the allocator cache emptied (not on
        every release), and garbage is collected only as a last resort before
        refusing: a full collection costs a tenth of a second with torch loaded.
        """
        evicted = collected = False
        while True:
            mem = self.device.memory()
            resident = self._device_bytes()
            budget = self.policy.budget(mem, resident)
            on_device = need + self.headroom <= mem.reusable
            if on_device and (budget is None or resident + need <= budget):
                break
            victim = self._victim(exclude=entry.spec.key)
            if victim is not None:
                self._leave_device(victim, "evict", f"make room for {entry.spec.key}")
                evicted = True
            elif not collected:  # a model kept alive only by a reference cycle
                gc.collect()
                self.device.release_cached()
                collected = True
            else:
                self._refuse(entry, need, mem.reusable, mem.total, budget)
        if evicted:
            self.device.release_cached()

    def _refuse(
        self, entry: _Entry, need: int, free: int, total: int, budget: int | None
    ) -> NoReturn:
        limit = f", budget {budget / GB:.2f} GB" if budget is not None else ""
        others = self.device.other_processes_bytes()
        if others:
            limit += f"; other processes hold {others / GB:.2f} GB"
        msg = (
            f"model '{entry.spec.key}' does not fit: needs {need / GB:.2f} GB "
            f"+ {self.headroom / GB:.2f} GB headroom, {free / GB:.2f} GB free of "
            f"{total / GB:.2f} GB{limit}"
        )
        if need + self.headroom > total or (budget is not None and need > budget):
            raise DoesNotFitError(msg)
        raise ResidencyError(msg, code="does_not_fit_now")

    def _place(self, entry: _Entry) -> None:
        started = self.clock()
        if entry.tier == "host":
            entry.model = self.device.to_device(entry.model)
            entry.tier = "device"
            entry.promotes += 1
            entry.last_promote_s = self.clock() - started
            self._emit("promote", entry, "host", "device", entry.last_promote_s)
            return
        model = entry.spec.load(self.device.name)
        entry.model = self.device.to_device(model)
        entry.tier = "device"
        entry.nbytes = self.device.model_bytes(entry.model)
        entry.loads += 1
        entry.last_load_s = self.clock() - started
        self._emit("load", entry, "disk", "device", entry.last_load_s)

    def _abandon(self, entry: _Entry) -> None:
        """After a failed placement: send a half-moved model back to host, or forget it."""
        if entry.tier == "host" and entry.model is not None:
            entry.model = self.device.to_host(entry.model, pin=True)
        elif entry.tier != "host":
            if entry.model is not None:
                self.device.forget(entry.model)
            entry.model, entry.tier = None, "disk"
        gc.collect()
        self.device.release_cached()

    def _device_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.tier == "device")

    def _value(self, entry: _Entry) -> float:
        """What keeping a model is worth: its reload cost, discounted by idle time."""
        cost = entry.last_promote_s if self.warm_tier and entry.last_promote_s else None
        cost = cost or entry.last_load_s or 1.0
        return cost / (1.0 + max(0.0, self.clock() - entry.last_used))

    def _victim(self, exclude: str, tier: Tier = "device") -> _Entry | None:
        candidates = [
            e
            for e in self._entries.values()
            if e.tier == tier and not e.in_use and not e.spec.pinned and e.spec.key != exclude
        ]
        return min(candidates, key=self._value, default=None)

    # ---- leaving the device ------------------------------------------------------------

    def _leave_device(
        self, entry: _Entry, event: Literal["demote", "evict", "drop"], why: str
    ) -> None:
        if event == "drop" or not self.warm_tier or not self._warm_room(entry):
            self._drop(entry, "drop" if event != "evict" else "evict", why)
            return
        started = self.clock()
        entry.model = self.device.to_host(entry.model, pin=True)
        entry.tier = "host"
        self._emit(event, entry, "device", "host", self.clock() - started, why)

    def _warm_room(self, entry: _Entry) -> bool:
        if entry.nbytes > self.warm_budget:
            return False
        while sum(e.nbytes for e in self._entries.values() if e.tier == "host") + entry.nbytes > (
            self.warm_budget
        ):
            victim = self._victim(exclude=entry.spec.key, tier="host")
            if victim is None:
                return False
            self._drop(victim, "evict", f"warm tier full for {entry.spec.key}")
        return True

    def _drop(self, entry: _Entry, event: Literal["drop", "evict"], why: str) -> None:
        started = self.clock()
        src = entry.tier
        if entry.model is not None:
            self.device.forget(entry.model)
        entry.model, entry.tier = None, "disk"
        self._emit(event, entry, src, "disk", self.clock() - started, why)

    def _emit(
        self, kind: str, entry: _Entry, src: Tier, dst: Tier, seconds: float, why: str | None = None
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
            }
        )
        for sink in self._sinks:
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
