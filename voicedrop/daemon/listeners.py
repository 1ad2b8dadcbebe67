"""One observation surface for a job: named events, heard by a list of listeners.

The attempt (attempt.py) and the cluster dispatch say what happens to a job as five
events — `started`, `stage` (progress within the job, or where it runs), `retrying`,
`paused` and `finished` — and know nothing of who listens. The status file, systemd's STATUS=, the
Prometheus registry, the metrics textfile and the heap trimmer are each one listener
(as huey's `emit_task` signals). A listener that fails is logged and the others still
hear: watching the daemon must never stop a job.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from voicedrop.metrics import Metrics
from voicedrop.report import ErrorInfo, JobReport

log = structlog.get_logger(__name__)


class Listener:
    """What can be heard of a job; every event defaults to nothing. Subclass and
    override the events you need."""

    def started(self, job_id: str, attempt: int) -> None:
        """A job's attempt began (claimed, counted): nothing has run yet."""

    def stage(self, job_id: str, stage: str) -> None:
        """Progress: 'tts 3/10', 'convert', 'post', or where the job runs ('on worker-1')."""

    def retrying(self, job_id: str, delay_s: float, error: ErrorInfo) -> None:
        """The attempt failed transiently: the job waits `delay_s` in work/ for another."""

    def paused(self, job_id: str, where: str) -> None:
        """The job stepped aside between its segments ('12/100') for a job of a higher
        priority; it starts again (`started`) when none is left."""

    def finished(self, report: JobReport) -> None:
        """The job ended for good (done, failed or duplicate): its report is committed."""


class Listeners(Listener):
    """Every listener, in order."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self.all = list(listeners)

    def add(self, listener: Listener) -> None:
        self.all.append(listener)

    def started(self, job_id: str, attempt: int) -> None:
        for listener in self.all:
            with _guard(listener, "started"):
                listener.started(job_id, attempt)

    def stage(self, job_id: str, stage: str) -> None:
        for listener in self.all:
            with _guard(listener, "stage"):
                listener.stage(job_id, stage)

    def retrying(self, job_id: str, delay_s: float, error: ErrorInfo) -> None:
        for listener in self.all:
            with _guard(listener, "retrying"):
                listener.retrying(job_id, delay_s, error)

    def paused(self, job_id: str, where: str) -> None:
        for listener in self.all:
            with _guard(listener, "paused"):
                listener.paused(job_id, where)

    def finished(self, report: JobReport) -> None:
        for listener in self.all:
            with _guard(listener, "finished"):
                listener.finished(report)


class _guard:
    """Log a listener's exception (once per event) instead of letting it end the job."""

    def __init__(self, listener: Listener, event: str) -> None:
        self.listener, self.event = listener, event

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        log.error(
            "listener.failed",
            listener=type(self.listener).__name__,
            on=self.event,
            error=f"{type(exc).__name__}: {exc}",
        )
        return True


class Prometheus(Listener):
    """Counts and histograms of finished jobs, for `/metrics` and the textfile."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def finished(self, report: JobReport) -> None:
        self.metrics.observe(report)
