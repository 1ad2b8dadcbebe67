"""The residency manager: which model weights sit on the device, in host memory, or on disk.

`acquire_all(specs)` puts the set of models one computation needs (role →
ModelSpec) on the compute device for the length of a block: it admits the
set once (admission.py: their weights not yet on the device plus the largest
working memory any of them needs, plus headroom), places them in order and, on exit, lets
the policy decide each one's fate in reverse order: stay, demote to the warm
tier (host memory, pinned under CUDA) or drop. A model shared by many sets
(HuBERT, RMVPE, a vocoder) is one key, placed once. Admission also runs when
every weight is already resident: the working memory must be free before the
block starts. An out-of-memory error while placing runs a ladder: release
cached blocks, evict the others, retry once. The moves themselves, and their
events in the logs and the report, are the tier table's (tiers.py).

With prefetch on, `acquire_all(specs, then=next_specs)` also hands the models the
next stage will need to the prefetch thread (prefetch.py), which reads them into the
warm tier through `warm()` while this block computes. The table is guarded by one
lock and model construction by a second (models are built one at a time: loaders
patch process-wide state); an acquire that needs a model being prefetched waits for
that read.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from voicedrop.config import GB, Settings
from voicedrop.errors import CardBusyError, OutOfMemoryError
from voicedrop.pipeline.admission import Admission, Block
from voicedrop.pipeline.device import Device
from voicedrop.pipeline.footprints import FootprintStore
from voicedrop.pipeline.modelspec import ModelSpec, Tier
from voicedrop.pipeline.neighbours import CardRoom, NeighbourWatch, yields
from voicedrop.pipeline.policies import Policy, policy_from_settings
from voicedrop.pipeline.prefetch import Prefetcher
from voicedrop.pipeline.tiers import Entry, TierTable
from voicedrop.report import ModelEvent, ModelView, VramStats

log = structlog.get_logger(__name__)


@dataclass
class ResidencyManager:
    device: Device
    policy: Policy
    low_vram_mode: bool = False
    warm_tier: bool = True
    warm_budget: int = 8 * GB
    headroom: int = 0
    keep_alive: float | None = None  # seconds an idle model may stay on the device
    prefetch: bool = False  # read the next stage's models into the warm tier meanwhile
    footprints: FootprintStore = field(default_factory=lambda: FootprintStore(None))
    clock: Callable[[], float] = time.monotonic
    reserve: int = 0  # kept free for the other programs on the card (pipeline/neighbours.py)
    card_wait_s: float = 0.0  # how long a job waits for a card other programs hold

    @classmethod
    def from_settings(cls, settings: Settings, device: Device) -> ResidencyManager:
        """The manager a daemon (or a cluster worker) builds from its configuration."""
        res = settings.residency
        return cls(
            device=device,
            policy=policy_from_settings(settings),
            low_vram_mode=settings.policy == "low",  # LOW_VRAM, or the low policy named
            warm_tier=res.warm_tier,
            warm_budget=int(res.warm_budget_gb * GB),
            headroom=int(res.headroom_gb * GB),
            keep_alive=res.keep_alive_s,
            prefetch=res.prefetch,
            footprints=FootprintStore(settings.state_path / "footprints.json"),
            reserve=int(res.neighbour_headroom_gb * GB) if yields(settings, device) else 0,
            card_wait_s=res.card_wait_s,
        )

    def __post_init__(self) -> None:
        self._tiers = TierTable(self.device, self.clock, self.warm_tier, self.warm_budget)
        self._entries = self._tiers.entries
        self._admission = Admission(
            self.device, self.policy, self._tiers, self.headroom, self.footprints, self.reserve
        )
        self._lock = threading.RLock()  # the table: the executor and the prefetch thread
        self.card_changed = threading.Event()  # set by the neighbour watch at each reading
        self.who_holds = "other programs hold it"  # as the neighbour watch last read it
        self.on_wait: Callable[[str], None] | None = None  # the running job's progress
        self.room = CardRoom(self.device, self._tiers, self._lock, self.warm_tier, self._keep_host)
        self.watch: NeighbourWatch | None = None  # started by the process that holds the card
        self.prefetcher = Prefetcher(self) if self.prefetch and self.warm_tier else None

    # ---- the contract -------------------------------------------------------------------

    @contextmanager
    def acquire(self, spec: ModelSpec) -> Iterator[Any]:
        with self.acquire_all({spec.key: spec}) as models:
            yield models[spec.key]

    @contextmanager
    def acquire_all(
        self, specs: Mapping[str, ModelSpec], then: Sequence[ModelSpec] = ()
    ) -> Iterator[dict[str, Any]]:
        """Place every model of `specs` (role → spec, in placement order); yield role → model.
        `then`: the models wanted next, prefetched into the warm tier while the block runs."""
        with self._lock:
            roles = {role: self._tiers.entry(spec) for role, spec in specs.items()}
            members = list({id(e): e for e in roles.values()}.values())
            fresh = [e for e in members if not e.in_use]  # the rest an outer block holds
            for e in members:
                e.in_use += 1
        block = None
        try:
            waited_from, said = None, list[str]()
            while True:
                for e in members:  # a read in flight finishes first: never loaded twice
                    loading = e.loading
                    if loading is not None:
                        loading.wait()
                with self._lock:
                    try:
                        if fresh:
                            self._admission.make_room(fresh)
                            block = self._admission.open_block(fresh)
                            for entry in fresh:
                                if entry.tier != "device":
                                    self._place_with_ladder(entry, block)
                        break
                    except CardBusyError:
                        waited_from = self.clock() if waited_from is None else waited_from
                        if self.clock() - waited_from >= self.card_wait_s:
                            raise
                self._wait_for_card(fresh, said)  # outside the lock: the watch may demote
            if then and self.prefetcher is not None:
                self.prefetcher.want(then)
            yield {role: e.model for role, e in roles.items()}
        finally:
            with self._lock:
                for e in members:
                    e.in_use -= 1
                    e.last_used = self.clock()
                if block is not None:
                    self._admission.close_block(block)
                for e in reversed(fresh):
                    if e.tier == "device" and not e.in_use and not self._stays(e):
                        why = "keep_alive 0" if e.keep_alive == 0 else "policy low"
                        self._tiers.leave_device(e, "demote" if self.warm_tier else "drop", why)

    def _wait_for_card(self, fresh: list[Entry], said: list[str]) -> None:
        """Another program holds the card: say so (the job's stage, the log) when who holds
        it changes, and wait for the next reading — the set's models free to make room
        meanwhile (one already on the device is not held there by the wait)."""
        who = self.who_holds
        if said != [who]:
            said[:] = [who]
            keys = [e.spec.key for e in fresh]
            log.warning("residency.waiting_for_card", models=keys, holders=who)
            if self.on_wait is not None:
                self.on_wait(f"waiting for the card: {who}")
        with self._lock:
            for e in fresh:
                e.in_use -= 1
        try:
            self.card_changed.clear()
            self.card_changed.wait(1.0)
        finally:
            with self._lock:
                for e in fresh:
                    e.in_use += 1

    def warm(self, spec: ModelSpec, keep: frozenset[str] = frozenset()) -> bool:
        """Prefetch: read `spec` from disk into the warm tier, if it is on disk, unused, and
        fits the warm budget (dropping warm models but `keep`). On the prefetch thread."""
        prefetcher = self.prefetcher
        with self._lock:
            entry = self._tiers.entry(spec)
            if prefetcher is None or prefetcher.stopping or entry.tier != "disk":
                return False
            if entry.in_use or entry.loading is not None:
                return False
            predicted = self._admission.weights(entry)
            if not self._tiers.warm_room(entry, predicted, keep):
                log.info("prefetch.skipped", model=spec.key, reason="warm tier budget")
                return False
            entry.loading = threading.Event()
            self._tiers.reserved += predicted
        started, model, kept = self.clock(), None, False
        try:
            with self._tiers.building:
                if not prefetcher.stopping:
                    model = spec.load(self.device.placement(warm=True))
        except Exception as exc:  # left on disk: the job's own acquire reports the error
            log.warning("prefetch.load_failed", model=spec.key, error=str(exc))
        finally:
            with self._lock:
                self._tiers.reserved -= predicted
                if model is not None and not prefetcher.stopping:
                    self._tiers.prefetched(entry, model, self.clock() - started)
                    kept = self._tiers.host_bytes() + self._tiers.reserved <= self.warm_budget
                    if not kept:
                        self._tiers.drop(entry, "evict", "larger than predicted: warm tier full")
                loading, entry.loading = entry.loading, None
                if loading is not None:
                    loading.set()
        return kept

    def load(self, spec: ModelSpec, keep_alive: float | None = None) -> None:
        """Put a model on the device ahead of its jobs (`[residency] preload`, a client's
        load request) and keep it there, once idle, for `keep_alive` seconds (inf when
        None: until room is needed); with keep_alive 0 it is read into memory only."""
        self.keep_alive_for([spec], math.inf if keep_alive is None else keep_alive)
        with self.acquire_all({spec.key: spec}):
            pass

    def unload(self, key: str) -> bool:
        """Give a model's memory back (device and warm tier); False: not loaded, or in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.tier == "disk" or entry.in_use:
                return False
            entry.keep_alive = None
            self._tiers.drop(entry, "drop", "unloaded on request")
            self.device.release_cached()
            return True

    def get_vram_usage(self) -> VramStats:
        """The original LOW_VRAM design's stats: exactly its seven fields (dumped to a dict
        only at the JSON edges: reports, status.json, `GET /vram`)."""
        with self._lock:
            cached = sum(1 for e in self._entries.values() if e.tier != "disk")
        mem = self.device.memory()
        stats = VramStats(
            available=mem.available,
            low_vram_mode=self.low_vram_mode,
            allocated_gb=round(mem.allocated / GB, 3),
            reserved_gb=round(mem.reserved / GB, 3),
            free_gb=round(mem.free / GB, 3),
            total_gb=round(mem.total / GB, 3),
            cached_models=cached,
        )
        return stats

    def models(self) -> dict[str, ModelView]:
        """The extended per-model view: tier, bytes per tier, loads, promotes, peaks, and
        under keep-alive how long an idle model has left on the device."""
        with self._lock:
            return self._views()

    def _views(self) -> dict[str, ModelView]:
        views = self._tiers.views()
        now = self.clock()
        for key, e in self._entries.items():
            timeout = self._timeout(e)
            if e.tier == "device" and not e.in_use and timeout is not None:
                left = max(0.0, timeout - (now - e.last_used))
                views[key] = views[key].model_copy(update={"leaves_in_s": round(left, 1)})
        return views

    def keep_alive_for(self, specs: Iterable[ModelSpec], seconds: float | None) -> None:
        """A job's own keep-alive for its models (Ollama's `keep_alive`): 0 leaves the
        device right after use, inf stays (until room is needed), N seconds stays that long
        idle, whatever the policy; None goes back to the configured behaviour."""
        with self._lock:
            for spec in specs:
                self._tiers.entry(spec).keep_alive = seconds

    def _stays(self, e: Entry) -> bool:
        """Whether a model stays on the device after its use."""
        if e.keep_alive is not None:
            return e.keep_alive > 0
        return self.policy.keeps_after_use()

    def _timeout(self, e: Entry) -> float | None:
        """How long an idle model may stay on the device; None: as long as it fits."""
        if e.spec.pinned:
            return None
        if e.keep_alive is not None:
            return None if e.keep_alive == float("inf") else e.keep_alive
        return self.keep_alive

    def expire(self) -> list[str]:
        """Keep-alive (like Ollama's): models idle on the device past their keep-alive leave
        it, whatever the policy, so an idle machine gets its GPU back. Between jobs."""
        with self._lock:
            return self._expire()

    def _expire(self) -> list[str]:
        now = self.clock()
        idle = [
            e
            for e in self._entries.values()
            if e.tier == "device"
            and not e.in_use
            and (timeout := self._timeout(e)) is not None
            and now - e.last_used >= timeout
        ]
        for e in idle:
            self._tiers.leave_device(e, "demote" if self.warm_tier else "drop", "keep_alive")
        if idle:
            self.device.release_cached()
        return [e.spec.key for e in idle]

    def resident_keys(self, tier: Tier = "device") -> set[str]:
        with self._lock:
            return {k for k, e in self._entries.items() if e.tier == tier}

    def known(self, keys: Iterable[str]) -> list[ModelSpec]:
        """The specs of the models of `keys` this manager has held (it can load them again)."""
        with self._lock:
            return [self._entries[k].spec for k in keys if k in self._entries]

    def in_memory_keys(self) -> set[str]:
        """Models on the device or in the warm tier: a job using them starts without a load."""
        with self._lock:
            return {k for k, e in self._entries.items() if e.tier != "disk"}

    @contextmanager
    def recording(self) -> Iterator[list[ModelEvent]]:
        """Collect the events of a block (one job) in the order they happen."""
        events: list[ModelEvent] = []
        with self._lock:
            self._tiers.sinks.append(events)
        try:
            yield events
        finally:
            with self._lock:
                self._tiers.sinks.remove(events)

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, OutOfMemoryError) or self.device.is_oom(exc)

    def relieve(self, keep: frozenset[str] = frozenset()) -> None:
        """The OOM ladder's first rungs: evict every idle model but `keep`, free cached blocks."""
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.tier == "device" and not entry.in_use and entry.spec.key not in keep:
                    self._tiers.leave_device(entry, "evict", "out of memory")
            gc.collect()
            self.device.release_cached()

    def close(self) -> None:
        """Stop prefetching and watching the card, then drop every model (shutdown)."""
        if self.prefetcher is not None:
            self.prefetcher.close()
        if self.watch is not None:
            self.watch.close()
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.tier != "disk":
                    self._tiers.drop(entry, "drop", "shutdown")
            self.device.release_cached()

    def predict(self, spec: ModelSpec) -> int:
        """Bytes a use of `spec` is expected to take on the device (admission.py)."""
        return self._admission.predict(spec)

    # ---- placement -----------------------------------------------------------------------

    def _keep_host(self) -> bool:
        """Under LOW a promoted model goes back to the warm tier after its stage: keep its
        host tensors meanwhile, and that return is free. Under the other policies models
        stay on the device, and a second copy in host memory would only cost RAM."""
        return self.warm_tier and not self.policy.keeps_after_use()

    def _place_with_ladder(self, entry: Entry, block: Block) -> None:
        try:
            self._tiers.place(entry, self._keep_host())
            return
        except Exception as exc:
            self._tiers.abandon(entry)
            if not self.device.is_oom(exc):
                raise
            log.warning("model.oom", model=entry.spec.key, error=str(exc), rung="evict and retry")
        self.relieve(keep=frozenset(e.spec.key for e in block.members))
        self._admission.rebase(block)
        self.device.reset_peak()
        block.peak = self.device.memory().allocated
        try:
            self._tiers.place(entry, self._keep_host())
        except Exception as exc2:
            self._tiers.abandon(entry)
            if self.device.is_oom(exc2):
                raise OutOfMemoryError(
                    f"out of memory placing '{entry.spec.key}' even after evicting "
                    f"the other models: {exc2}"
                ) from exc2
            raise
