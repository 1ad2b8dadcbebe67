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
from collections.abc import Callable
from dataclasses import dataclass, field
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
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.report import ErrorInfo, JobReport
from voicedrop.script import Script, parse_script, with_cues
from voicedrop.spool.deaths import MAX_INTERRUPTED, Witness, verdict
from voicedrop.spool.jobs import SUBMIT_REFS, ClaimedJob, Spool

log = structlog.get_logger(__name__)


@dataclass
class Attempt:
    """A job attempt under way: when it began (monotonic, and wall time), and what its
    preparation learnt (the manifest, if it could be read; a duplicate's original)."""

    job: ClaimedJob
    clock: float
    at: str
    manifest: Manifest | None = None
    duplicate_of: str | None = None


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

    def reconfigure(self, limits: Limits, runner: JobRunner) -> None:
        """A reload: the new limits (retries included), and a runner on the new engines."""
        self.limits = self.retries.limits = limits
        self.runner = runner

    def run(self, job: ClaimedJob) -> JobReport:
        """The whole attempt, in this process."""
        attempt = self.begin(job)
        with structlog.contextvars.bound_contextvars(job_id=attempt.job.job_id):
            prepared = self.prepare(attempt)
            if isinstance(prepared, JobInput):
                with self.witness.watching(attempt.job.dir):
                    progress = self._progress(attempt.job)
                    prepared = self.runner.run(prepared, progress, self.queue.upcoming)
            return self.end(attempt, prepared)

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
                    return self.runner.finish(Outcome(before))
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
            return self.runner.finish(Outcome(before, error=error))
        runs = manifest if script is None else with_cues(manifest, script)
        return JobInput(job.job_id, runs, reference, job.out_dir, script)

    def _script(self, job: ClaimedJob, manifest: Manifest) -> Script | None:
        """A script job's subtitle file, copied into the job and parsed into cues."""
        if manifest.script is None:
            return None
        limit = self.limits
        path = self.spool.copy_input(job, manifest.script, limit.max_script_bytes, "script")
        return parse_script(
            path.read_bytes(),
            manifest.script,
            max_cue_s=limit.max_cue_s,
            max_chars=limit.max_text_chars,
        )

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
        previous = deaths + self.retries.previous(job.job_id)
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
        self.retries.remember(job.job_id, [*report.previous_errors, report.error])
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
