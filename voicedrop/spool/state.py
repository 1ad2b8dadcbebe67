"""What state a job is in, read from the spool: the one reader `wait`, the HTTP side and the
dashboard share.

A job is `queued` while its manifest is in the inbox under its name, `running` once
claimed into `work/` (with its stage when this state directory's daemon runs it, and the
attempts made so far), and `done`, `failed` or `duplicate` once its report is published
in `outbox/` or `failed/`. Nothing else counts: the report is the completion marker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voicedrop.report import ErrorInfo, JobReport
from voicedrop.spool import names
from voicedrop.spool.claimed import JobRecord
from voicedrop.spool.jobs import Spool
from voicedrop.spool.status import DaemonStatus

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
FINAL = ("done", "failed", "duplicate")


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str  # queued | running | done | failed | duplicate
    stage: str | None = None  # running here: what it is doing
    attempts: int = 0  # running: attempts begun so far
    report: JobReport | None = None
    folder: Path | None = None  # where its files are: outbox/<id> or failed/<id>
    outputs: list[str] = field(default_factory=list)
    failed_attempts: int = 0  # running: of its attempts, those that ended in a transient error

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def error(self) -> ErrorInfo | None:
        """Why it failed, from its report (None: not failed, or not ended)."""
        return None if self.report is None else self.report.error


def read_report(folder: Path) -> JobReport | None:
    """A published report, or None if there is none (or it cannot be read as one)."""
    try:
        return JobReport.model_validate_json((folder / names.REPORT).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def read_report_json(folder: Path) -> dict[str, Any] | None:
    """A published report as its JSON, unchecked: for the dashboard, which shows many at
    once on every poll and reads only what it displays."""
    try:
        report = json.loads((folder / names.REPORT).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return report if isinstance(report, dict) else None


def job_state(spool: Spool, job_id: str, daemon: DaemonStatus | None) -> JobState | None:
    """The state of `job_id` (None: no such job, or not a job id); `daemon`: this state
    directory's live daemon, if any (for the stage of the job it runs).

    A job moves while it is looked for: claimed from the inbox into work/ just after
    work/ was looked in, or committed to the outbox just after the outbox was. One pass
    can then miss a job that exists (a client told "no such job", or "failed", for a job
    that is running or done), so a miss is looked for once more: a job moves forward by
    one rename at a time, and the second pass finds where it went. Ended jobs are looked
    for first: a manifest dropped again under an ended job's name is a new job, which its
    claim will name `<name>-2`."""
    if not JOB_ID.match(job_id):
        return None
    return _look(spool, job_id, daemon) or _look(spool, job_id, daemon)


def _look(spool: Spool, job_id: str, daemon: DaemonStatus | None) -> JobState | None:
    for folder in (spool.outbox, spool.failed):
        report = read_report(folder / job_id)
        if report is not None:
            outputs = [o.file for o in report.outputs]
            script = report.script  # a script job's subtitles and cue sheet too
            if script is not None:
                outputs += [f for f in (script.subtitles, script.cue_sheet) if f]
            return JobState(job_id, report.status, None, 0, report, folder / job_id, outputs)
    work = spool.work / job_id
    if work.is_dir():  # claimed: running here, on another daemon, or waiting for a retry
        ours = daemon is not None and daemon.job_id == job_id
        record = JobRecord.read(work)
        begun, failed = (0, 0) if record is None else (record.attempts, len(record.errors))
        stage = daemon.stage if ours and daemon else None
        return JobState(job_id, "running", stage, begun, failed_attempts=failed)
    if (spool.inbox / f"{job_id}.json").exists():
        return JobState(job_id, "queued")
    return None
