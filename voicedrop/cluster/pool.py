"""The head's side of Ray: one worker actor per GPU, and the runs in flight on them.

`Pool.start()` connects to the cluster (or starts a private one, `address = "local"`)
and creates the actors: `num_gpus = gpus_per_actor` each, so Ray gives each its own card
(`CUDA_VISIBLE_DEVICES`), and `max_restarts` so a crashed actor comes back. Each runs at
most one job at a time. The pool remembers what each actor holds in memory (sent back
with every result) for routing, and after a failure it sends an actor nothing until it
answers a ping again (a restarting actor, or one whose node is gone, would otherwise
swallow jobs). Ray's task retries are off: a lost run is retried by the executor, as a
new attempt, so it is counted.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import ray
import structlog

from voicedrop.cluster.worker import Done, Work, Worker
from voicedrop.config import Settings
from voicedrop.errors import ConfigError

log = structlog.get_logger(__name__)
PING_TIMEOUT_S = 60.0
PING_AGAIN_S = 5.0  # between pings of an actor that did not answer


@dataclass(eq=False)
class Slot:
    index: int
    handle: Any
    resident: frozenset[str] = frozenset()
    ref: Any = None  # the run in flight
    token: Hashable | None = None  # the executor's name for that run
    ping: Any = None  # after a failure: usable again once this answers
    ping_at: float = 0.0  # when to ask again if the last ping failed (an actor gone for good)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def free(self) -> bool:
        return self.ref is None and self.ping is None


class Pool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots: list[Slot] = []
        self._started_ray = False

    def start(self) -> None:
        """Connect (or start a private cluster) and build every actor; a ConfigError that
        says why when the cluster cannot be reached or cannot place the actors."""
        try:
            self._start()
        except (ConnectionError, ray.exceptions.RayError) as exc:
            self.close()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ConfigError(
                f"ray: cannot start the workers at address {self.settings.ray.address!r}: {first}",
                field="ray.address",
            ) from None

    def _start(self) -> None:
        cfg = self.settings.ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if cfg.address == "local":  # a new cluster, even where `ray start` runs one
            ray.init(
                address="local",
                num_cpus=cfg.local_cpus or os.cpu_count() or 1,
                num_gpus=cfg.local_gpus,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=256 * 1024**2,
            )
            self._started_ray = True
        elif not ray.is_initialized():
            ray.init(address=cfg.address, log_to_driver=False)
            self._started_ray = True
        gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
        count = cfg.actors or max(1, int(gpus // cfg.gpus_per_actor) if cfg.gpus_per_actor else 1)
        if cfg.gpus_per_actor and count * cfg.gpus_per_actor > gpus:
            raise ConfigError(
                f"ray: {count} actor(s) x {cfg.gpus_per_actor:g} GPU need "
                f"{count * cfg.gpus_per_actor:g} GPUs; the cluster has {gpus:g}",
                field="ray.actors",
            )
        actor = ray.remote(Worker).options(
            num_gpus=cfg.gpus_per_actor,
            num_cpus=0,  # a worker waits on its GPU; the CPUs are the engines' to use
            max_restarts=cfg.max_restarts,
            max_task_retries=0,
        )
        for i in range(count):
            policy = cfg.policies[i] if i < len(cfg.policies) else None
            self.slots.append(Slot(i, actor.remote(self.settings, i, policy)))
        deadline = time.monotonic() + PING_TIMEOUT_S
        for slot in self.slots:  # every actor built (engines, devices) before any job
            left = max(1.0, deadline - time.monotonic())
            slot.status = ray.get(slot.handle.status.remote(), timeout=left)
        log.info("cluster.started", actors=count, gpus=gpus, address=cfg.address)

    # ---- runs ------------------------------------------------------------------------------

    def free(self) -> list[Slot]:
        for slot in self.slots:
            if slot.ping is None:
                continue
            if slot.ping_at and time.monotonic() < slot.ping_at:
                continue  # it did not answer: ask again later, not on every turn
            ready, _ = ray.wait([slot.ping], timeout=0)
            if not ready:
                continue
            try:
                ray.get(slot.ping)
                slot.ping, slot.ping_at = None, 0.0
                slot.status = ray.get(slot.handle.status.remote())
                log.info("cluster.actor_back", actor=slot.index)
            except ray.exceptions.RayError:
                slot.ping = slot.handle.ping.remote()  # still gone
                slot.ping_at = time.monotonic() + PING_AGAIN_S
        return [s for s in self.slots if s.free]

    def submit(self, slot: Slot, work: Work, token: Hashable) -> None:
        slot.ref, slot.token = slot.handle.run.remote(work), token
        slot.status = {**slot.status, "job_id": work.job_id}

    def wait(self, timeout: float) -> list[tuple[Slot, Hashable, Done | BaseException]]:
        """Runs that ended (or failed) within `timeout` seconds: (slot, token, result)."""
        running = {s.ref: s for s in self.slots if s.ref is not None}
        if not running:
            return []
        ready, _ = ray.wait(list(running), num_returns=len(running), timeout=timeout)
        ended: list[tuple[Slot, Hashable, Done | BaseException]] = []
        for ref in ready:
            slot = running[ref]
            token, slot.ref, slot.token = slot.token, None, None
            try:
                done: Done = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the actor, its node or the task died
                slot.resident = frozenset()  # a restarted actor holds nothing
                slot.ping = slot.handle.ping.remote()
                slot.status = {**slot.status, "job_id": None}
                ended.append((slot, token, exc))
                continue
            slot.resident = done.resident
            slot.status = {
                **slot.status,
                "job_id": None,
                "vram": done.outcome.vram_after and done.outcome.vram_after.model_dump(),
                "models": {k: v.model_dump() for k, v in done.outcome.models.items()},
            }
            ended.append((slot, token, done))
        return ended

    def describe(self) -> list[dict[str, Any]]:
        """Each actor as last seen (start, or its last result): for status.json, no calls."""
        return [
            {"index": s.index, "state": "busy" if s.ref else "lost" if s.ping else "idle"}
            | {k: v for k, v in s.status.items() if k != "state"}
            for s in self.slots
        ]

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(slot.handle.close.remote(), timeout=30)
            ray.kill(slot.handle)
        self.slots = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
