"""The single-threaded executor: `step()` runs one job, `run()` loops until stopped.

Every error is caught at the job boundary and written into the report; the
loop goes on. The clock, the spool, the device (inside the manager) and the
stability gate are injected, so tests call `step()` and never sleep.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from voicedrop.config import Settings
from voicedrop.daemon.outcome import Outcome, build_report
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.spool import ClaimedJob, InboxFile, Spool
from voicedrop.daemon.wakeup import Waker
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.errors import ManifestError, OutOfMemoryError, TransientError, VoicedropError
from voicedrop.manifest import Manifest, parse_manifest
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.stages import JobContext, Stage, check_job, plan, resolve_voice
from voicedrop.report import ErrorInfo, JobReport, StageRecord

log = structlog.get_logger(__name__)
AFFINITY_WINDOW = 16


@dataclass
class Executor:
    settings: Settings
    spool: Spool
    engines: Engines
    manager: ResidencyManager
    scheduler: Scheduler
    gate: StabilityGate
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    on_status: Callable[[dict[str, Any]], None] = lambda _s: None
    _recovered: list[ClaimedJob] = field(default_factory=list)
    _deferred: list[tuple[float, ClaimedJob]] = field(default_factory=list)
    _history: dict[str, list[ErrorInfo]] = field(default_factory=dict)
    _ready: list[InboxFile] = field(default_factory=list)
    _keys: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    rescan: bool = True
    retry_s: float = 5.0

    def start(self) -> None:
        self.spool.ensure()
        self._recovered = self.spool.recover()
        if self._recovered:
            log.info("executor.recovered", jobs=[j.job_id for j in self._recovered])

    def _requeue(self) -> None:
        """After a spool error, pick up whatever is left in work/ (it is retried, counted);
        jobs waiting for a transient retry stay on their schedule."""
        waiting = {job.job_id for _, job in self._deferred}
        try:
            self._recovered = [j for j in self.spool.recover() if j.job_id not in waiting]
        except OSError as exc:
            log.error("executor.spool_error", error=str(exc))

    # ---- the loop ----------------------------------------------------------------------

    def step(self) -> JobReport | None:
        """Run the next job, if any is ready; return its report."""
        job = self._next()
        return None if job is None else self.run_job(job)

    def run(
        self,
        stop: threading.Event,
        wake: Waker,
        *,
        once: bool = False,
        tick: Callable[[], None] = lambda: None,
        idle: Callable[[], None] = lambda: None,
        max_wait_s: float | None = None,
    ) -> None:
        """Loop until `stop`; with `once`, until the inbox holds nothing more to take."""
        last_scan = self.clock()
        while not stop.is_set():
            tick()
            if wake.is_set() or self.clock() - last_scan >= self.settings.watcher.scan_interval_s:
                wake.clear()
                self.rescan, last_scan = True, self.clock()
            try:
                if self.step() is not None:
                    continue
            except OSError as exc:  # the spool itself fails: disk full, share offline
                log.error("executor.spool_error", error=str(exc), retry_in_s=self.retry_s)
                wake.wait(self.retry_s)
                self._requeue()
                continue
            idle()
            if once and self.gate.waiting() == 0 and not self._deferred:
                return
            timeout = 0.1 if self.gate.waiting() else self.settings.watcher.scan_interval_s
            if self._deferred:
                timeout = min(timeout, max(0.0, self._deferred[0][0] - self.clock()))
            wake.wait(min(timeout, max_wait_s or timeout))

    def _next(self) -> ClaimedJob | None:
        if self._recovered:
            return self._recovered.pop(0)
        if self._deferred and self._deferred[0][0] <= self.clock():  # kept sorted by due time
            return self._deferred.pop(0)[1]
        while True:
            if not self._ready or self.rescan:
                self.scan()
            if not self._ready:
                return None
            resident = self.manager.resident_keys() if self.settings.scheduler.affinity else set()
            item = self.scheduler.pick(
                self._ready[:AFFINITY_WINDOW], lambda f: f.path.name, self._peek_keys, resident
            )
            assert item is not None
            self._ready.remove(item)
            job = self.spool.claim(item)
            if job is not None:
                return job

    def scan(self) -> int:
        """List the inbox and note which files are complete; return how many are."""
        self.rescan = False
        listing = self.spool.scan_inbox()
        self._ready = self.gate.ready(listing, self.clock(), self.wall())
        return len(self._ready)

    def _peek_keys(self, item: InboxFile) -> set[str]:
        """The model keys a queued manifest would use, for affinity; unreadable → none."""
        cache_key = (str(item.path), item.mtime_ns)
        if cache_key not in self._keys:
            keys: set[str] = set()
            try:
                if item.size <= self.settings.limits.max_manifest_bytes:
                    data = json.loads(item.path.read_bytes())
                    keys.add(str(data["tts"]["engine"]))
                    if data.get("convert"):
                        keys.add(f"{data['convert']['engine']}:{data['convert']['model']}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            self._keys = {cache_key: keys, **dict(list(self._keys.items())[-255:])}
        return self._keys[cache_key]

    # ---- one job -------------------------------------------------------------------

    def run_job(self, job: ClaimedJob) -> JobReport:
        job = self.spool.begin_attempt(job)
        started, started_at = self.clock(), datetime.now(UTC).isoformat()
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            log.info("job.start", source=job.source, attempt=job.attempts)
            self.on_status({"state": "running", "job_id": job.job_id, "stage": None})
            before = self.manager.get_vram_usage()
            with self.manager.recording() as events:
                outcome = self._attempt(job)
            report = build_report(
                job,
                outcome,
                events,
                before,
                self.manager,
                self.engines,
                previous_errors=self._history.pop(job.job_id, []),
            )
            report.timings = {
                "started_at": started_at,
                "finished_at": datetime.now(UTC).isoformat(),
                "total_s": round(self.clock() - started, 4),
            }
            if self._retry_later(job, report):
                return report
            self._commit(job, report, outcome.manifest)
            log.info(
                "job.end",
                status=report.status,
                error=report.error and report.error.message,
                seconds=report.timings["total_s"],
            )
            self.on_status({"state": "idle", "job_id": None, "stage": None})
        return report

    def _retry_later(self, job: ClaimedJob, report: JobReport) -> bool:
        """Keep a transiently failed job in work/ for another attempt, if it has one left.

        Nothing is committed: the job waits, counted, and its final report lists the
        errors of the attempts before it.
        """
        error = report.error
        if error is None or error.kind != "transient":
            return False
        if job.attempts >= self.settings.limits.max_attempts:
            return False
        delay = self.settings.limits.retry_delay_s * 2 ** (job.attempts - 1)
        self._history[job.job_id] = [*report.previous_errors, error]
        self._deferred.append((self.clock() + delay, job))
        self._deferred.sort(key=lambda item: item[0])
        log.warning("job.retry_later", error=error.message, attempt=job.attempts, delay_s=delay)
        self.on_status({"state": "idle", "job_id": None, "stage": None})
        return True

    def _attempt(self, job: ClaimedJob) -> Outcome:
        out = Outcome()
        limit = self.settings.limits
        try:
            if job.attempts > limit.max_attempts:
                raise VoicedropError(
                    f"the daemon stopped during this job {job.attempts - 1} times (crash or "
                    f"kill); giving up after max_attempts={limit.max_attempts}",
                    code="too_many_attempts",
                )
            out.manifest = manifest = self._load_manifest(job)
            if manifest.id is not None:
                out.duplicate_of = self.spool.completed_job_for(manifest.id)
                if out.duplicate_of:
                    return out
            ref = manifest.tts.reference_path
            reference = self.spool.copy_input(job, ref, limit.max_reference_bytes) if ref else None
            voice = resolve_voice(manifest, self.settings, reference)
            check_job(manifest, self.settings, self.engines, voice)
            out.ctx = JobContext(
                job.job_id,
                manifest,
                self.settings,
                self.engines,
                self.manager,
                voice,
                job.out_dir,
                progress=self._progress(job),
            )
            for stage in plan(manifest):
                out.stages.append(self._run_stage(stage, out.ctx))
        except VoicedropError as exc:
            out.error = exc
        except OSError as exc:  # disk full, share gone, I/O error: not the job's fault
            log.warning("job.io_error", error=str(exc))
            out.error = TransientError(f"I/O error: {exc}", code="io_error")
        except Exception as exc:
            log.exception("job.internal_error")
            out.error = VoicedropError(f"{type(exc).__name__}: {exc}", code="internal_error")
        return out

    def _load_manifest(self, job: ClaimedJob) -> Manifest:
        limit = self.settings.limits
        try:
            fd = os.open(job.manifest_path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise ManifestError(f"manifest cannot be opened (a symlink?): {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(limit.max_manifest_bytes + 1)
        return parse_manifest(
            raw, max_bytes=limit.max_manifest_bytes, max_text_chars=limit.max_text_chars
        )

    def _progress(self, job: ClaimedJob) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.on_status({"state": "running", "job_id": job.job_id, "stage": message})

        return report

    def _run_stage(self, stage: Stage, ctx: JobContext) -> StageRecord:
        """Run a stage; on out-of-memory, relieve the device and retry it once."""
        started = self.clock()
        with structlog.contextvars.bound_contextvars(stage=stage.name):
            ctx.progress(stage.name)
            try:
                stage.run(ctx)
            except Exception as exc:
                if not self.manager.is_oom(exc):
                    raise
                log.warning("stage.out_of_memory", error=str(exc), action="evict and retry once")
                self.manager.relieve()
                try:
                    stage.run(ctx)
                except Exception as exc2:
                    if not self.manager.is_oom(exc2):
                        raise
                    self.manager.relieve()
                    raise OutOfMemoryError(
                        f"stage '{stage.name}' ran out of device memory twice: {exc2}"
                    ) from exc2
        return StageRecord(
            name=stage.name, engine=stage.engine(ctx), seconds=round(self.clock() - started, 4)
        )

    def _commit(self, job: ClaimedJob, report: JobReport, manifest: Manifest | None) -> None:
        if report.status == "failed":
            self.spool.commit_failed(job, report.to_json())
            return
        self.spool.commit_done(job, report.to_json())
        if report.status == "done" and manifest is not None and manifest.id is not None:
            self.spool.remember(manifest.id, job.job_id)
