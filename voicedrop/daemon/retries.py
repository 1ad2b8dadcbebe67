"""When to try again: a job whose attempt failed transiently, and the spool itself.

Two clocks, kept apart. A job's transient failure (an out-of-memory, a lost worker)
waits `retry_delay_s * 2**(attempt - 1)` in work/, counted against `max_attempts`; its
final report lists the errors of the attempts before it. A failure of the spool itself
(disk full, a share away, the outbox unwritable) stops all claiming for a delay that
doubles from `retry_s` up to MAX_BACKOFF_S, and resets when a job gets through again:
a full disk must not be hammered, nor a job be failed for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from voicedrop.config import Limits
from voicedrop.report import ErrorInfo
from voicedrop.spool.claimed import ClaimedJob

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 60.0


@dataclass
class RetryPolicy:
    """Which failed attempts are tried again, after how long, and what they carry."""

    limits: Limits

    def delay(self, job: ClaimedJob, error: ErrorInfo | None) -> float | None:
        """Seconds until the job's next attempt, or None when this attempt is its last."""
        if error is None or error.kind != "transient":
            return None
        if job.attempts >= self.limits.max_attempts:
            return None
        return float(self.limits.retry_delay_s * 2 ** (job.attempts - 1))


@dataclass
class SpoolBackoff:
    """The spool is in trouble: claim nothing until `due`, then try to recover."""

    clock: Callable[[], float] = time.monotonic
    retry_s: float = 5.0  # the first wait; doubled up to MAX_BACKOFF_S
    wait_s: float = 0.0  # the current wait (0: the spool is well)
    due: float | None = None  # set while the spool is in trouble: when to try again

    def failed(self, exc: OSError) -> None:
        self.wait_s = min(MAX_BACKOFF_S, self.wait_s * 2 or self.retry_s)
        self.due = self.clock() + self.wait_s
        log.error("executor.spool_error", error=str(exc), retry_in_s=self.wait_s)

    def waiting(self) -> bool:
        """True while the wait is not over (nothing is claimed)."""
        return self.due is not None and self.due > self.clock()

    def recovered(self) -> None:
        """The spool answered again; the wait doubles on, until a job gets through."""
        self.due = None

    def job_through(self) -> None:
        self.wait_s = 0.0
