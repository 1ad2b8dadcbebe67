"""Finished jobs: the ledger that lists them, and the holds of those who read them.

The ledger is `<spool>/.ledger.jsonl`, one line per job as it ends.
The outbox of a busy spool holds thousands of jobs. What must not cost in proportion to
that — the dashboard's list of recent jobs, polled every second while someone watches;
retention's choice of what to remove — reads this ledger instead of listing folders:
the newest lines from the file's end, or all of it for a sweep. Every daemon of a spool
appends to it (one short line under an flock); a spool without one (made before it
existed) gets one from a listing, once. A line whose job is gone is simply skipped.

A reader of a finished job (the HTTP side sending its audio) holds a shared lock on its
report while it reads; retention removes only a job nobody holds (`remove`), by one
rename out of sight first, so a reader never finds half a job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from voicedrop.fsutil import write_atomic
from voicedrop.spool import names

LEDGER = ".ledger.jsonl"
TAIL_BYTES = 64 * 1024
Origin = Literal["drop", "http"]


class Finished(BaseModel):
    job_id: str
    status: str
    folder: Literal["outbox", "failed"]
    finished: float  # Unix time
    origin: Origin = "drop"
    # Which job of that name: its report's inode and mtime. A user may remove a finished
    # job's folder and drop a job of the same name again; the entry is the old job's, and
    # must never remove the new one (None: an entry from before marks were kept).
    mark: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """One finished job: its name alone may be a later job's too."""
        return (self.job_id, self.folder, self.mark)


def mark_of(st: os.stat_result) -> str:
    """The mark of a finished job, from its report file's stat."""
    return f"{st.st_ino}:{st.st_mtime_ns}"


class Ledger:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LEDGER
        self.lock = root / (LEDGER + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Appends and rewrites one at a time (the lock is a file of its own: a rewrite
        replaces the ledger, and an append must never land in the one replaced)."""
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add(self, entry: Finished) -> None:
        """One line for a job that ended (OSError: the spool's own trouble)."""
        line = (entry.model_dump_json() + "\n").encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def recent(self, count: int) -> list[Finished]:
        """The newest `count` entries, newest first: read from the file's end."""
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                want = TAIL_BYTES
                while True:
                    fh.seek(max(0, size - want))
                    lines = fh.read().splitlines()
                    if want >= size or len(lines) > count:
                        break
                    want *= 4
        except OSError:
            return []
        if want < size:
            lines = lines[1:]  # the first may be cut
        return _parsed(lines[::-1])[:count]

    def entries(self) -> list[Finished]:
        """All of it, oldest first."""
        try:
            return _parsed(self.path.read_bytes().splitlines())
        except OSError:
            return []

    def rewrite(self, keep: list[Finished]) -> None:
        """Keep only `keep` (a sweep removed the rest), under the lock appends take."""
        with self._locked():
            kept = {e.key for e in keep}
            current = [e for e in self.entries() if e.key in kept]
            text = "".join(e.model_dump_json() + "\n" for e in current)
            write_atomic(self.path, text, overwrite=True, durable=False)

    def ensure(self, outbox: Path, failed: Path) -> None:
        """A spool whose jobs ended before the ledger existed: list them into it, once."""
        if self.path.exists():
            return
        found = []
        for folder, name in ((outbox, "outbox"), (failed, "failed")):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    with contextlib.suppress(OSError):
                        st = (Path(entry.path) / names.REPORT).stat()
                        found.append(
                            Finished(
                                job_id=entry.name,
                                status="done" if name == "outbox" else "failed",
                                folder=name,  # type: ignore[arg-type]
                                finished=st.st_mtime,
                                mark=mark_of(st),
                            )
                        )
        found.sort(key=lambda e: e.finished)
        text = "".join(e.model_dump_json() + "\n" for e in found)
        with self._locked(), contextlib.suppress(FileExistsError):  # another daemon was first
            write_atomic(self.path, text, durable=False)


def _parsed(lines: list[bytes]) -> list[Finished]:
    out = []
    for line in lines:
        with contextlib.suppress(ValueError, ValidationError):
            out.append(Finished.model_validate_json(line))
    return out


def hold(folder: Path) -> int | None:
    """Hold a finished job while reading it (an fd to close when done); None: no job."""
    try:
        fd = os.open(folder / names.REPORT, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


Removal = Literal["removed", "held", "gone"]


def remove(folder: Path, mark: str | None = None) -> Removal:
    """Remove the finished job `mark` names unless someone reads it ("held": tried again
    later). "gone": the folder is no longer that job (removed by hand, or another job of
    the same name is there now, whose report is not the one marked): it is left alone."""
    try:
        fd = os.open(folder / names.REPORT, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None  # a folder without a report: nobody can be reading it
    try:
        if fd is not None and mark is not None and mark_of(os.fstat(fd)) != mark:
            return "gone"
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "held"
        gone = folder.with_name(f".removed-{folder.name}")
        os.rename(folder, gone)
    except FileNotFoundError:
        return "gone"
    finally:
        if fd is not None:
            os.close(fd)
    shutil.rmtree(gone, ignore_errors=True)
    return "removed"
