"""Where a daemon's jobs run with `voicedrop run --ray ADDRESS`: on Ray worker actors.

The daemon stays the only process that touches the spool: it claims, schedules, sends
each attempt's manifest and inputs to a worker actor (cluster/pool.py), and writes what
comes back (audio, events, VRAM snapshots) exactly as a local run would, through the
same `begin` / `prepare` / `end` as a local run (attempt.py): reports, retries, commits and
duplicates are the same code. Up to one job runs per actor.

Routing: each free actor takes the job the scheduler picks for the models *it* holds
(on its device or in its warm tier), with the same bounded skips and waits as the local
scheduler; actors holding models choose first, and an actor holding nothing the queue
wants takes the oldest job. `ray.routing = "round-robin"` ignores residency (for
comparison). A worker that dies mid-job (actor crash, node lost) fails that attempt
with a transient `worker_lost` error: the job is retried later on any actor, counted
against `max_attempts`. Results are published by job id and attempt: a result for an
attempt that is no longer running is discarded and logged, never published twice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from voicedrop.cluster.worker import Done, Work
from voicedrop.config import Settings
from voicedrop.daemon.attempt import Attempt, Attempts
from voicedrop.daemon.queue import JobQueue
from voicedrop.errors import TransientError
from voicedrop.pipeline.runner import JobInput, Outcome
from voicedrop.report import JobReport
from voicedrop.spool.claimed import ClaimedJob
from voicedrop.spool.control import ControlRequest

if TYPE_CHECKING:  # the pool imports Ray: only `run --ray` loads it (Cluster.start)
    from voicedrop.cluster.pool import Pool, Slot

log = structlog.get_logger(__name__)


@dataclass
class _Run:
    attempt: Attempt
    out_dir: Path


@dataclass
class Cluster:
    """A Dispatch (daemon/executor.py) onto one worker actor per GPU of a Ray cluster."""

    settings: Settings
    queue: JobQueue
    attempts: Attempts
    pool: Pool | None = None
    poll_s: float | None = 0.02  # how often a loop with jobs on workers looks for results
    reloadable: bool = False  # the workers hold the settings they started with
    _runs: dict[Hashable, _Run] = field(default_factory=dict)
    _ended: list[JobReport] = field(default_factory=list)
    _turn: int = 0  # round-robin's next actor

    def start(self) -> None:
        """Connect to the cluster and start one worker actor per GPU (Ray is imported
        only here)."""
        from voicedrop.cluster.pool import Pool

        self.pool = Pool(self.settings)
        self.pool.start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def busy(self) -> bool:
        return bool(self._runs)

    def step(self) -> JobReport | None:
        """Publish what ended; give every free actor a job; return one report, if any."""
        if not self._ended:
            self._collect(0)
            for slot in self._route():
                job = self.queue.next(set(self._held(slot)), self._held_elsewhere(slot))
                if job is None:
                    break
                self._dispatch(job, slot)
            if not self._ended and self._runs:
                self._collect(self.poll_s or 0)
        return self._ended.pop(0) if self._ended else None

    def drain(self, tick: Callable[[], None]) -> None:
        """Stopping: the jobs already on workers finish and are published."""
        if self._runs:
            log.info("cluster.draining", jobs=sorted(str(t) for t in self._runs))
        while self._runs:
            self._collect(1.0)
            tick()
        self._ended.clear()

    def workers(self) -> list[dict[str, Any]]:
        return self.pool.describe() if self.pool is not None else []

    def reconfigure(self, settings: Settings) -> None:
        return None  # never called: not reloadable

    def control(self, request: ControlRequest) -> dict[str, Any]:
        """Models live on the workers, each its own: a client's request is refused here."""
        return {
            "ok": False,
            "status": 409,
            "error": "models are loaded on the cluster's workers as jobs need them",
        }

    # ---- routing ---------------------------------------------------------------------------

    def _route(self) -> list[Slot]:
        assert self.pool is not None
        free = self.pool.free()
        if self.settings.ray.routing == "round-robin":
            n = len(self.pool.slots)
            order = sorted(free, key=lambda s: (s.index - self._turn) % n)
            self._turn = (self._turn + len(order)) % n if order else self._turn
            return order
        return sorted(free, key=lambda s: -len(s.resident))  # holders choose first

    def _held(self, slot: Slot) -> frozenset[str]:
        return frozenset() if self.settings.ray.routing == "round-robin" else slot.resident

    def _held_elsewhere(self, slot: Slot) -> frozenset[str]:
        assert self.pool is not None
        return frozenset().union(*(self._held(s) for s in self.pool.slots if s is not slot))

    # ---- one attempt -----------------------------------------------------------------------

    def _dispatch(self, job: ClaimedJob, slot: Slot) -> None:
        assert self.pool is not None
        attempt = self.attempts.begin(job)
        job = attempt.job
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            prepared = self.attempts.prepare(attempt)
            if not isinstance(prepared, JobInput):  # ends here: bad input, a duplicate
                self._ended.append(self.attempts.end(attempt, prepared))
                return
            reference = None
            if prepared.reference is not None:
                reference = (prepared.reference.name, prepared.reference.read_bytes())
            work = Work(job.job_id, job.attempts, prepared.manifest, prepared.script, reference)
            token = (job.job_id, job.attempts)
            self._runs[token] = _Run(attempt, prepared.out_dir)
            self.pool.submit(slot, work, token)
            log.info("cluster.dispatched", actor=slot.index, attempt=job.attempts)
            self.attempts.events.stage(job.job_id, f"on worker-{slot.index}")  # told at once

    def _collect(self, timeout: float) -> None:
        assert self.pool is not None
        ended = self.pool.wait(timeout)
        for slot, token, result in ended:
            run = self._runs.pop(token, None)
            if run is None:  # not an attempt in flight: never published twice
                log.warning("cluster.late_result", run=str(token), actor=slot.index)
                continue
            self._ended.append(self._finish(run, slot, result))
        if ended and self._runs:  # `end` said idle: the daemon is not, while workers run jobs
            job_id = next(iter(self._runs.values())).attempt.job.job_id
            stage = f"{len(self._runs)} job(s) on cluster workers"
            self.attempts.events.stage(job_id, stage)

    def _finish(self, run: _Run, slot: Slot, result: Done | BaseException) -> JobReport:
        job = run.attempt.job
        if isinstance(result, BaseException):
            first = (str(result).strip().splitlines() or [""])[0][:300]
            log.warning("cluster.worker_lost", job_id=job.job_id, actor=slot.index, error=first)
            error = TransientError(
                f"the worker running this job was lost ({type(result).__name__}: {first})",
                code="worker_lost",
            )
            runner = self.attempts.runner
            outcome = runner.finish(Outcome(runner.manager.get_vram_usage(), error=error))
        else:
            outcome = result.outcome
            outcome.worker = result.worker
            run.out_dir.mkdir(parents=True, exist_ok=True)
            for name, data in result.files.items():
                (run.out_dir / Path(name).name).write_bytes(data)  # a name, never a path
        return self.attempts.end(run.attempt, outcome)
