"""What a claimed job is: its id (from the inbox file's name), its folder in work/ and
its attempts so far; and the name a file gets in a report. Shared by the spool that
claims jobs and the daemon that runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def out_dir(self) -> Path:
        return self.dir / "out"
