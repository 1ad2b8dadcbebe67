"""The single-threaded executor: `step()` runs one job, `run()` loops until stopped.

Every error is caught at the job boundary and written into the report; the
loop goes on. The clock, the spool, the device (inside the manager) and the
stability gate are injected, so tests call `step()` and never sleep.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from voicedrop.config import Settings
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.outcome import build_report, minimal_report
from voicedrop.daemon.peek import CACHED, ManifestPeek
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.wakeup import Waker
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.errors import ManifestError, PermanentError, job_error
from voicedrop.intake import read_manifest
from voicedrop.manifest import Manifest
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.report import ErrorInfo, JobReport
from voicedrop.script import Script, parse_script, with_cues
from voicedrop.spool.deaths import MAX_INTERRUPTED, Witness, verdict
from voicedrop.spool.inbox import InboxFile
from voicedrop.spool.jobs import SUBMIT_REFS, ClaimedJob, Spool, Unclaimable, display_name

log = structlog.get_logger(__name__)
AFFINITY_WINDOW = 16
LOOKAHEAD = CACHED // 2  # ready files whose named files are checked per scan
MAX_BACKOFF_S = 60.0


class JobObserver(Protocol):
    """What the executor tells about its work: every state change, and each final report."""

    def status(self, change: dict[str, Any]) -> None:
        """The daemon's state changed: `state`, `job_id`, `stage` (progress within a job)."""

    def finished(self, report: JobReport) -> None:
        """A job ended for good (done, failed or duplicate), its report committed."""


class NullObserver:
    def status(self, change: dict[str, Any]) -> None:
        return None

    def finished(self, report: JobReport) -> None:
        return None


@dataclass(frozen=True)
class Started:
    """A job attempt under way: the job, and when it began (monotonic, and wall time)."""

    job: ClaimedJob
    clock: float
    at: str


@dataclass
class Executor:
    settings: Settings
    spool: Spool
    runner: JobRunner
    scheduler: Scheduler
    gate: StabilityGate
    inbox: InboxIndex
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    observer: JobObserver = field(default_factory=NullObserver)
    _recovered: list[ClaimedJob] = field(default_factory=list)
    _deferred: list[tuple[float, ClaimedJob]] = field(default_factory=list)
    _history: dict[str, list[ErrorInfo]] = field(default_factory=dict)
    _passed: dict[str, int] = field(default_factory=dict)  # job id -> jobs that went ahead
    _ready: list[InboxFile] = field(default_factory=list)
    _unclaimable: dict[str, tuple[int, int]] = field(default_factory=dict)  # said once
    rescan: bool = True
    peek: ManifestPeek = field(init=False)
    retry_s: float = 5.0  # the first wait after a spool error; doubled up to MAX_BACKOFF_S
    ran: dict[str, int] = field(default_factory=dict)  # reports committed by this run, by status
    _recover_at: float | None = None  # set while the spool is in trouble: when to try again
    _backoff: float = 0.0
    witness: Witness = field(default_factory=Witness)  # why a daemon died mid-job

    def __post_init__(self) -> None:
        self.peek = ManifestPeek(self)

    def start(self) -> None:
        try:
            self.spool.ensure()
            self._recovered = self.spool.recover()
        except OSError as exc:  # a full disk, a share away: recovery is tried again later
            self._spool_error(exc)
            return
        if self._recovered:
            log.info("executor.recovered", jobs=[j.job_id for j in self._recovered])

    def _spool_error(self, exc: OSError) -> None:
        """The spool itself failed (disk full, a share gone, outbox unwritable): claim
        nothing new and try again after a delay that doubles, up to MAX_BACKOFF_S."""
        self._backoff = min(MAX_BACKOFF_S, self._backoff * 2 or self.retry_s)
        self._recover_at = self.clock() + self._backoff
        log.error("executor.spool_error", error=str(exc), retry_in_s=self._backoff)

    def adopt(self) -> None:
        """Take over the jobs of a daemon of this spool that died (their leases are free),
        as a restarted daemon would; jobs a live daemon owns are never touched."""
        mine = {job.job_id for _, job in self._deferred} | {j.job_id for j in self._recovered}
        found = [j for j in self.spool.recover() if j.job_id not in mine]
        if found:
            log.info("executor.adopted", jobs=[j.job_id for j in found])
            self._recovered += found

    def _requeue(self) -> None:
        """After a spool error: finish the commits that failed, pick up whatever is left
        in work/ (it is retried, counted); jobs waiting for a transient retry keep their
        schedule. While a commit still fails, try again later."""
        waiting = {job.job_id for _, job in self._deferred}
        try:
            self._recovered = [j for j in self.spool.recover() if j.job_id not in waiting]
            stuck = self.spool.uncommitted()
        except OSError as exc:
            self._spool_error(exc)
            return
        if stuck:
            self._spool_error(OSError(f"{len(stuck)} finished job(s) not yet published: {stuck}"))
            return
        self._recover_at = None  # the backoff resets only when a job gets through again

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
        """Loop until `stop`; with `once`, until the inbox holds nothing more to take.
        `stop` is left set when it returns (a run is over either way)."""
        ended = threading.Event()
        noter = threading.Thread(
            target=self._note_stop, args=(stop, ended), name="voicedrop-stop-note", daemon=True
        )
        noter.start()
        try:
            self._loop(stop, wake, once, tick, idle, max_wait_s)
        finally:
            ended.set()
            stop.set()  # releases the noter: nothing polls while the daemon waits
            noter.join()

    def _note_stop(self, stop: threading.Event, ended: threading.Event) -> None:
        """The moment a stop is asked for, the running job's folder says so: if a kill
        follows (systemd's stop timeout), it was not the job's fault (deaths.py). A thread,
        because the loop itself may be inside a long computation."""
        stop.wait()
        if not ended.is_set():
            self.witness.stopping()

    def _loop(
        self,
        stop: threading.Event,
        wake: Waker,
        once: bool,
        tick: Callable[[], None],
        idle: Callable[[], None],
        max_wait_s: float | None,
    ) -> None:
        last_scan = self.clock()
        while not stop.is_set():
            tick()
            timed = self.clock() - last_scan >= self.settings.watcher.scan_interval_s
            if wake.is_set() or timed:
                wake.clear()
                self.rescan, last_scan = True, self.clock()
            try:
                if timed:
                    self.inbox.relist()  # events are hints: the listing, now and then, is truth
                    self.adopt()
                if self.step() is not None:
                    continue
            except OSError as exc:  # the spool itself fails: disk full, share offline
                self._spool_error(exc)
                continue
            idle()
            waiting = self.gate.waiting() or self._deferred or self._recover_at or self.busy()
            if once and not waiting:
                break
            timeout = 0.1 if self.gate.waiting() else self.settings.watcher.scan_interval_s
            if self.busy():
                timeout = min(timeout, self.POLL_BUSY_S)
            for at in (self._recover_at, self._deferred[0][0] if self._deferred else None):
                if at is not None:
                    timeout = min(timeout, max(0.0, at - self.clock()))
            wake.wait(min(timeout, max_wait_s or timeout))
        self.drain(tick)

    def drain(self, tick: Callable[[], None]) -> None:
        """At stop: let the jobs under way elsewhere finish (none: a local job ends in step)."""
        return None

    POLL_BUSY_S = 0.02  # how often a loop with jobs running elsewhere looks for results

    def busy(self) -> bool:
        """Jobs under way that this loop must wait for (none: a local job runs inside step)."""
        return False

    def workers(self) -> list[dict[str, Any]]:
        """Cluster workers, for the status file (none: jobs run in this process)."""
        return []

    def _next(
        self,
        resident: set[str] | None = None,
        elsewhere: AbstractSet[str] = frozenset(),
    ) -> ClaimedJob | None:
        """The next job to run: recovered, then due retries, then the scheduler's pick
        (affinity to `resident`, by default the models this daemon holds in memory;
        `elsewhere`: what other cluster workers hold)."""
        if self._recover_at is not None:
            if self._recover_at > self.clock():
                return None  # the spool is in trouble: claim nothing until it is retried
            self._requeue()
            if self._recover_at is not None:
                return None
        if self._recovered:
            return self._recovered.pop(0)
        if self._deferred and self._deferred[0][0] <= self.clock():  # kept sorted by due time
            return self._deferred.pop(0)[1]
        while True:
            if not self._ready or self.rescan:
                self.scan()
            if not self._ready:
                return None
            held = self._in_memory() if resident is None else resident
            item = self.scheduler.pick(
                self._ready[:AFFINITY_WINDOW], _name, self.peek.keys, held, elsewhere
            )
            assert item is not None
            self._ready.remove(item)
            try:
                job = self.spool.claim(item)
            except Unclaimable as exc:
                self._cannot_claim(exc)
                continue
            finally:
                self.inbox.changed(item.path.name)  # gone now, or changed: look again
            if job is not None:
                self._passed[job.job_id] = self.scheduler.passed_by
                return job

    def _cannot_claim(self, exc: Unclaimable) -> None:
        """Say once (per version of the file) that an inbox entry cannot be taken; the
        queue goes on without it until it changes."""
        item = exc.item
        self._unclaimable[str(item.path)] = (item.size, item.mtime_ns)
        log.error(
            "inbox.unclaimable",
            file=display_name(item.path.name),
            reason=exc.reason,
            action="left in the inbox; move or fix it (it is tried again when it changes)",
        )

    def _claimable(self, item: InboxFile) -> bool:
        said = self._unclaimable.get(str(item.path))
        if said is None:
            return True
        if said == (item.size, item.mtime_ns):
            return False
        del self._unclaimable[str(item.path)]  # changed: try again
        return True

    def _in_memory(self) -> set[str]:
        """Models a job can start with, no disk load: on the device or in the warm tier."""
        if not self.settings.scheduler.affinity:
            return set()
        return self.runner.manager.in_memory_keys()

    def upcoming(self) -> tuple[ModelSpec, ...]:
        """The first models of the job likely to run after this one (what the scheduler
        would pick now), from its plan, for prefetch; none when a recovered or retried
        job comes first, or nothing waits."""
        if self._recovered or (self._deferred and self._deferred[0][0] <= self.clock()):
            return ()
        item = self.scheduler.preview(
            self._ready[:AFFINITY_WINDOW], _name, self.peek.keys, self._in_memory()
        )
        return () if item is None else self.peek.of(item).first

    def scan(self) -> int:
        """Look at the inbox (its index: a listing only when one is due) and note which
        files are complete, with every file they name; return how many are."""
        self.rescan = False
        listing = [f for f in self.inbox.files() if self._claimable(f)]
        now, wall = self.clock(), self.wall()
        ready = self.gate.ready(listing, now, wall)
        # the queue looks ahead as far as the peek remembers: a deep queue is read in
        # turns, never re-read in full on every scan
        self._ready = [f for f in ready[:LOOKAHEAD] if not self.peek.awaits_files(f, now, wall)]
        return len(ready)

    # ---- one job -------------------------------------------------------------------

    def run_job(self, job: ClaimedJob) -> JobReport:
        started = self.begin(job)
        job = started.job
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            manifest, duplicate_of, prepared = self.prepare(job)
            if isinstance(prepared, JobInput):
                with self.witness.watching(job.dir):
                    prepared = self.runner.run(prepared, self._progress(job), self.upcoming)
            return self.end(started, manifest, duplicate_of, prepared)

    def begin(self, job: ClaimedJob) -> Started:
        """Count the attempt (and how the last one died, if it died) and say the job runs."""
        death = verdict(job.dir) if job.attempts else None
        if death is not None:
            log.warning(
                "job.previous_attempt_died",
                job_id=job.job_id,
                cause=death.cause,
                detail=death.detail,
                charged=death.charged,
                evidence=death.evidence or None,
            )
        job = self.spool.begin_attempt(job, death)
        started = Started(job, self.clock(), datetime.now(UTC).isoformat())
        log.info("job.start", job_id=job.job_id, source=job.source, attempt=job.attempts)
        self.observer.status({"state": "running", "job_id": job.job_id, "stage": None})
        return started

    def end(
        self,
        started: Started,
        manifest: Manifest | None,
        duplicate_of: str | None,
        outcome: Outcome,
    ) -> JobReport:
        """Report the attempt, then commit it, or keep it for a retry."""
        job = started.job
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            report = self._report(job, manifest, duplicate_of, outcome)
            report.passed_by = self._passed.get(job.job_id, 0)
            report.timings = {
                "started_at": started.at,
                "finished_at": datetime.now(UTC).isoformat(),
                "total_s": round(self.clock() - started.clock, 4),
            }
            if self._retry_later(job, report):
                return report
            self._commit(job, report, manifest)
            self._passed.pop(job.job_id, None)
            self._backoff = 0.0
            self.ran[report.status] = self.ran.get(report.status, 0) + 1
            self.observer.finished(report)
            log.info(
                "job.end",
                status=report.status,
                error=report.error and report.error.message,
                seconds=report.timings["total_s"],
            )
            self.observer.status({"state": "idle", "job_id": None, "stage": None})
        return report

    def _report(
        self, job: ClaimedJob, manifest: Manifest | None, duplicate_of: str | None, out: Outcome
    ) -> JobReport:
        """The attempt's report; if even that cannot be built or written as JSON (a bug,
        or input no check foresaw), a minimal failed report, so that the job still ends:
        a report that cannot be made must never send the daemon into a crash loop."""
        deaths = [ErrorInfo(code="daemon_died", message=d, kind="transient") for d in job.deaths]
        previous = deaths + self._history.pop(job.job_id, [])
        try:
            report = build_report(
                job, manifest, out, duplicate_of=duplicate_of, previous_errors=previous
            )
            report.to_json()
            return report
        except Exception as exc:
            log.exception("job.report_failed")
            return minimal_report(job, exc, previous, self.runner.manager.get_vram_usage())

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
        shutil.rmtree(job.out_dir, ignore_errors=True)  # partial outputs of this attempt
        delay = self.settings.limits.retry_delay_s * 2 ** (job.attempts - 1)
        self._history[job.job_id] = [*report.previous_errors, error]
        self._deferred.append((self.clock() + delay, job))
        self._deferred.sort(key=lambda item: item[0])
        log.warning("job.retry_later", error=error.message, attempt=job.attempts, delay_s=delay)
        self.observer.status({"state": "idle", "job_id": None, "stage": None})
        return True

    def prepare(self, job: ClaimedJob) -> tuple[Manifest | None, str | None, JobInput | Outcome]:
        """The spool's part of an attempt (manifest, duplicates, inputs): what the runner
        needs, or the outcome when the job ends here (bad input, a duplicate)."""
        limit = self.settings.limits
        manifest = None
        before = self.runner.manager.get_vram_usage()
        try:
            if job.crashes >= limit.max_attempts:
                raise PermanentError(
                    f"this job brought the daemon down {job.crashes} times (the last: "
                    f"{job.deaths[-1]}); giving up after max_attempts={limit.max_attempts}",
                    code="too_many_attempts",
                )
            if job.interrupted > MAX_INTERRUPTED:
                raise PermanentError(
                    f"the daemon died {job.interrupted} times during this job with no sign "
                    f"that the job was at fault; giving up after {MAX_INTERRUPTED}",
                    code="too_many_attempts",
                )
            if job.name_problem is not None:  # hostile input: refused like bad content
                raise ManifestError(job.name_problem, field="file name")
            manifest = read_manifest(job.manifest_path, limit)
            if manifest.id is not None:  # reserved among every daemon of the spool
                duplicate_of = self.spool.ids.reserve(manifest.id, job.job_id)
                if duplicate_of:
                    return manifest, duplicate_of, self.runner.finish(Outcome(before))
            ref = manifest.tts.reference_path
            reference = self.spool.copy_input(job, ref, limit.max_reference_bytes) if ref else None
            script = self._script(job, manifest)
            for private in (ref, manifest.script):  # submit's private copies: the job has them
                if private and private.startswith(SUBMIT_REFS):
                    (self.spool.inbox / private).unlink(missing_ok=True)
        except Exception as exc:
            error = job_error(exc)
            if error.code == "internal_error":
                log.exception("job.internal_error")
            return manifest, None, self.runner.finish(Outcome(before, error=error))
        runs = manifest if script is None else with_cues(manifest, script)
        return manifest, None, JobInput(job.job_id, runs, reference, job.out_dir, script)

    def _script(self, job: ClaimedJob, manifest: Manifest) -> Script | None:
        """A script job's subtitle file, copied into the job and parsed into cues."""
        if manifest.script is None:
            return None
        limit = self.settings.limits
        path = self.spool.copy_input(job, manifest.script, limit.max_script_bytes, "script")
        return parse_script(
            path.read_bytes(),
            manifest.script,
            max_cue_s=limit.max_cue_s,
            max_chars=limit.max_text_chars,
        )

    def _progress(self, job: ClaimedJob) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.observer.status({"state": "running", "job_id": job.job_id, "stage": message})

        return report

    def _commit(self, job: ClaimedJob, report: JobReport, manifest: Manifest | None) -> None:
        if report.status != "failed":
            self.spool.commit_done(job, report.to_json())  # done: its client id stays held
            return
        self.spool.commit_failed(job, report.to_json())
        if manifest is not None and manifest.id is not None and report.duplicate_of is None:
            self.spool.ids.release(manifest.id, job.job_id)  # failed for good: the id is free


def _name(item: InboxFile) -> str:
    return item.path.name
