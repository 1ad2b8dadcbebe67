"""One attempt of a claimed job: begin, prepare, (run), end — wherever it runs.

`begin` counts the attempt (and how the last one died, if it died); `prepare` is the
spool's part (the manifest, a duplicate client id, the inputs copied into the job);
`end` reports the attempt, then commits it or keeps it for a retry. The same code
serves a job run in this process (`run`) and one sent to a cluster worker
(daemon/cluster.py): reports, retries, duplicates and commits never differ. Every
error is caught here, at the job boundary, into the report.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from voicedrop.config import Limits
from voicedrop.daemon.listeners import Listener, Listeners
from voicedrop.daemon.outcome import build_report, minimal_report
from voicedrop.daemon.queue import JobQueue
from voicedrop.daemon.retries import RetryPolicy
from voicedrop.errors import ManifestError, PermanentError, job_error
from voicedrop.intake import read_manifest
from voicedrop.manifest import Manifest
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.pipeline.stages import Paused, Take
from voicedrop.report import ErrorInfo, JobReport, ModelEvent, PauseRecord, StageRecord
from voicedrop.script import Script, read_script, with_cues
from voicedrop.spool import private
from voicedrop.spool.claimed import ClaimedJob
from voicedrop.spool.deaths import MAX_INTERRUPTED, Witness, verdict
from voicedrop.spool.jobs import Spool
from voicedrop.spool.stream import StreamWriter

log = structlog.get_logger(__name__)
# Runs a prepared job's stages: (job, progress, upcoming models) -> its outcome
Compute = Callable[[JobInput, Callable[[str], None], Callable[[], Sequence[ModelSpec]]], Outcome]


@dataclass
class Attempt:
    """A job attempt under way: when it began (monotonic, and wall time), and what its
    preparation learnt (the manifest, if it could be read; a duplicate's original)."""

    job: ClaimedJob
    clock: float
    at: str
    manifest: Manifest | None = None
    duplicate_of: str | None = None


@dataclass(frozen=True)
class SteppedAside:
    """What a job that stepped aside has done so far: its segments, the model events and
    stages of its runs, and when it last went (and first went: the bound on its waits)."""

    job_id: str
    made: tuple[Take, ...]
    events: tuple[ModelEvent, ...]
    stages: tuple[StageRecord, ...]
    pauses: tuple[PauseRecord, ...]
    at: float  # when it last stepped aside
    since: float  # when it first did


@dataclass
class Attempts:
    limits: Limits
    spool: Spool
    runner: JobRunner
    queue: JobQueue
    retries: RetryPolicy
    events: Listener = field(default_factory=Listeners)  # who hears of each job (listeners.py)
    clock: Callable[[], float] = time.monotonic
    witness: Witness = field(default_factory=Witness)  # why a daemon died mid-job
    ran: dict[str, int] = field(default_factory=dict)  # reports committed, by status
    aside: dict[str, SteppedAside] = field(default_factory=dict)  # jobs paused mid-job

    def reconfigure(self, limits: Limits, runner: JobRunner) -> None:
        """A reload: the new limits (retries included), and a runner on the new engines."""
        self.limits = self.retries.limits = limits
        self.runner = runner

    def run(self, job: ClaimedJob, compute: Compute | None = None) -> JobReport | SteppedAside:
        """The whole attempt: its report, or what it made before it stepped aside for a job
        of a higher priority (it comes back later). `compute` runs the job's stages: the
        runner in this process, or the device worker process (process.py)."""
        attempt = self.begin(job)
        with structlog.contextvars.bound_contextvars(job_id=attempt.job.job_id):
            prepared = self.prepare(attempt)
            if isinstance(prepared, JobInput):
                stream = StreamWriter(attempt.job.dir)
                try:
                    with self.witness.watching(attempt.job.dir):
                        progress = self._progress(attempt.job)
                        live = self._live(prepared, stream)
                        run = compute or self.runner.run
                        prepared = run(live, progress, self.queue.upcoming)
                finally:
                    stream.close()
                if prepared.paused is not None:
                    return self._step_aside(attempt, prepared, prepared.paused)
            return self.end(attempt, self._rejoined(attempt.job.job_id, prepared))

    def _live(self, job: JobInput, stream: StreamWriter) -> JobInput:
        """The job as it runs here: streamed, free to step aside between its segments for
        a job of a higher priority, and going on from where it last did."""
        earlier = self.aside.get(job.job_id)
        priority = job.manifest.priority
        since = earlier.since if earlier else None
        return replace(
            job,
            stream=stream,
            preempt=lambda: self.queue.urgent(priority, since),
            made=earlier.made if earlier else (),
        )

    def _step_aside(self, attempt: Attempt, out: Outcome, paused: Paused) -> SteppedAside:
        """Keep what the job made and let the higher priority go first; this attempt is
        not counted (the job did not fail: it yielded)."""
        job, now, manifest = attempt.job, self.clock(), attempt.manifest
        assert manifest is not None  # it ran
        earlier = self.aside.get(job.job_id)
        record = PauseRecord(after=len(paused.takes), of=paused.total, seconds=0.0)
        aside = SteppedAside(
            job.job_id,
            tuple(paused.takes),
            (*(earlier.events if earlier else ()), *out.events),
            (*(earlier.stages if earlier else ()), *out.stages),
            (*(earlier.pauses if earlier else ()), record),
            now,
            earlier.since if earlier else now,
        )
        self.aside[job.job_id] = aside
        self.queue.pause(self.spool.set_aside(job), manifest.priority, aside.since)
        where = f"{len(paused.takes)}/{paused.total}"
        log.info("job.stepped_aside", after=where, reason="a job of a higher priority is ready")
        self.events.paused(job.job_id, where)
        return aside

    def _rejoined(self, job_id: str, out: Outcome) -> Outcome:
        """A job that stepped aside before: its earlier runs' events and stages, and how
        long each pause lasted, go into its report."""
        earlier = self.aside.pop(job_id, None)
        if earlier is None:
            return out
        out.events = [*earlier.events, *out.events]
        out.stages = [*earlier.stages, *out.stages]
        last = earlier.pauses[-1].model_copy(
            update={"seconds": round(self.clock() - earlier.at, 3)}
        )
        out.pauses = [*earlier.pauses[:-1], last]
        return out

    def begin(self, job: ClaimedJob) -> Attempt:
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
        attempt = Attempt(job, self.clock(), datetime.now(UTC).isoformat())
        log.info("job.start", job_id=job.job_id, source=job.source, attempt=job.attempts)
        self.events.started(job.job_id, job.attempts)
        return attempt

    def prepare(self, attempt: Attempt) -> JobInput | Outcome:
        """The spool's part of an attempt (manifest, duplicates, inputs): what the runner
        needs, or the outcome when the job ends here (bad input, a duplicate)."""
        job, limit = attempt.job, self.limits
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
            manifest = attempt.manifest = read_manifest(job.manifest_path, limit)
            if manifest.id is not None:  # reserved among every daemon of the spool
                attempt.duplicate_of = self.spool.ids.reserve(manifest.id, job.job_id)
                if attempt.duplicate_of:
                    private.follow(self.spool.inbox, job.dir, limit.max_manifest_bytes)
                    return self.runner.finish(Outcome(before))
            ref = manifest.tts.reference_path
            reference = (
                self.spool.take_input(job, ref, limit.max_reference_bytes, "tts.voice")
                if ref
                else None
            )
            script = self._script(job, manifest)
            runs = manifest if script is None else with_cues(manifest, script)
        except Exception as exc:  # everything between claim and report: this job's failure
            private.follow(self.spool.inbox, job.dir, limit.max_manifest_bytes)  # kept with it
            error = job_error(exc)
            if error.code == "internal_error":
                log.exception("job.internal_error")
            return self.runner.finish(Outcome(before, error=error))
        return JobInput(job.job_id, runs, reference, job.out_dir, script)

    def _script(self, job: ClaimedJob, manifest: Manifest) -> Script | None:
        """A script job's subtitle file, copied into the job and parsed into cues."""
        if manifest.script is None:
            return None
        limit = self.limits
        path = self.spool.take_input(job, manifest.script, limit.max_script_bytes, "script")
        return read_script(path.read_bytes(), manifest.script, limit)

    def _progress(self, job: ClaimedJob) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.events.stage(job.job_id, message)

        return report

    def end(self, attempt: Attempt, outcome: Outcome) -> JobReport:
        """Report the attempt, then commit it, or keep it for a retry."""
        job = attempt.job
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            report = self._report(attempt, outcome)
            report.passed_by = self.queue.passed_by(job.job_id)
            report.timings = {
                "started_at": attempt.at,
                "finished_at": datetime.now(UTC).isoformat(),
                "total_s": round(self.clock() - attempt.clock, 4),
            }
            if self._retry_later(job, report):
                return report
            _gave_up(report, self.limits.max_attempts)
            self._commit(job, report, attempt.manifest)
            self.queue.committed(job.job_id)
            self.ran[report.status] = self.ran.get(report.status, 0) + 1
            log.info(
                "job.end",
                status=report.status,
                error=report.error and report.error.message,
                seconds=report.timings["total_s"],
            )
            self.events.finished(report)
        return report

    def _report(self, attempt: Attempt, out: Outcome) -> JobReport:
        """The attempt's report; if even that cannot be built or written as JSON (a bug,
        or input no check foresaw), a minimal failed report, so that the job still ends:
        a report that cannot be made must never send the daemon into a crash loop."""
        job = attempt.job
        deaths = [ErrorInfo(code="daemon_died", message=d, kind="transient") for d in job.deaths]
        previous = deaths + list(job.errors)
        try:
            report = build_report(
                job,
                attempt.manifest,
                out,
                duplicate_of=attempt.duplicate_of,
                previous_errors=previous,
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
        delay = self.retries.delay(job, report.error)
        if delay is None or report.error is None:
            return False
        shutil.rmtree(job.out_dir, ignore_errors=True)  # partial outputs of this attempt
        job = self.spool.keep_errors(job, [*job.errors, report.error])
        self.queue.defer(job, delay)
        log.warning(
            "job.retry_later", error=report.error.message, attempt=job.attempts, delay_s=delay
        )
        self.events.retrying(job.job_id, delay, report.error)
        return True

    def _commit(self, job: ClaimedJob, report: JobReport, manifest: Manifest | None) -> None:
        if report.status != "failed":
            self.spool.commit_done(job, report.to_json())  # done: its client id stays held
            return
        self.spool.commit_failed(job, report.to_json())
        if manifest is not None and manifest.id is not None and report.duplicate_of is None:
            self.spool.ids.release(manifest.id, job.job_id)  # failed for good: the id is free


def _gave_up(report: JobReport, max_attempts: int) -> None:
    """A job that ended its device worker at every attempt it was given: said as such (as
    a job that brought the daemon down is), not as one more lost worker."""
    error = report.error
    lost = 1 + sum(e.code == "worker_lost" for e in report.previous_errors)
    if error is None or error.code != "worker_lost" or lost < max_attempts:
        return
    report.error = error.model_copy(
        update={
            "kind": "permanent",
            "code": "too_many_attempts",
            "message": f"this job ended its device worker {lost} times (the last: "
            f"{error.message}); giving up after max_attempts={max_attempts}",
        }
    )
