"""What a claimed job is: its id (from the inbox file's name), its folder in work/ and
its attempts so far, kept with it in `job.json` (JobRecord: attempts, deaths and the
errors of earlier attempts, so a restart loses none of them); and the name a file gets in
a report. Shared by the spool that claims jobs and the daemon that runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from voicedrop.fsutil import write_atomic
from voicedrop.report import ErrorInfo
from voicedrop.spool import names
from voicedrop.spool.inbox import InboxFile


def display_name(name: str) -> str:
    """A file name as text that can go into a report: bytes that are not UTF-8 (held by
    Python as surrogates) become U+FFFD instead of breaking every later serialisation."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def job_stem(source: str) -> str:
    """The job id an inbox file name gets (a suffix -2, -3 … is added on collision)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).stem)[:80].strip("._") or "job"


class Unclaimable(Exception):
    """One inbox entry cannot be moved into work/ (e.g. it belongs to another user of a
    sticky folder, or is a mount point): it stays, said once, and the queue goes on."""

    def __init__(self, item: InboxFile, reason: str) -> None:
        super().__init__(reason)
        self.item = item
        self.reason = reason


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    dir: Path
    source: str  # the inbox file name, as text (display_name)
    attempts: int = 0
    name_problem: str | None = None  # why the file name itself is refused, if it is
    crashes: int = 0  # deaths in its stages charged to the job (deaths.py)
    interrupted: int = 0  # deaths in its stages not charged to it
    deaths: tuple[str, ...] = ()  # what each death was, for the report
    errors: tuple[ErrorInfo, ...] = ()  # earlier attempts' transient errors, for the report

    @property
    def manifest_path(self) -> Path:
        return self.dir / names.MANIFEST

    @property
    def out_dir(self) -> Path:
        return self.dir / names.OUT


class JobRecord(BaseModel):
    """`work/<job>/job.json`: the one record of a claimed job's attempts."""

    source: str
    attempts: int = 0
    name_problem: str | None = None
    crashes: int = 0
    interrupted: int = 0
    deaths: list[str] = []
    errors: list[ErrorInfo] = []
    updated: str = ""

    @classmethod
    def of(cls, job: ClaimedJob) -> JobRecord:
        return cls(
            source=job.source,
            attempts=job.attempts,
            name_problem=job.name_problem,
            crashes=job.crashes,
            interrupted=job.interrupted,
            deaths=list(job.deaths),
            errors=list(job.errors),
            updated=datetime.now(UTC).isoformat(),
        )

    @classmethod
    def read(cls, job_dir: Path) -> JobRecord | None:
        """None when missing or unreadable (a claim a kill cut short)."""
        try:
            return cls.model_validate_json((job_dir / names.RECORD).read_bytes())
        except (OSError, ValueError, ValidationError):
            return None

    def job(self, job_dir: Path) -> ClaimedJob:
        return ClaimedJob(
            job_dir.name,
            job_dir,
            display_name(self.source),
            self.attempts,
            self.name_problem,
            self.crashes,
            self.interrupted,
            tuple(self.deaths),
            tuple(self.errors),
        )

    def write(self, job_dir: Path) -> None:
        # Not fsynced: a kill -9 keeps the count (page cache); a power cut may lose one
        # attempt's count, i.e. one more retry at worst. Two fsyncs of a tiny job saved.
        write_atomic(job_dir / names.RECORD, self.model_dump_json(), overwrite=True, durable=False)
