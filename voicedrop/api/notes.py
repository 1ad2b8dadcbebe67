"""What happens to a job, as the HTTP side hears of it: a note per change, not a poll.

A request that follows a job (its audio, its end) waits for a note that something of that
job changed — its manifest claimed from the inbox, its live stream grown, its results
committed to the outbox or failed — and then looks once, off the event loop. One inotify
watcher (watchdog) per HTTP server watches the inbox, the outbox, failed/ and the work
folder with the live streams under it, and wakes the requests following the job a path
names. Notes are hints: a waiting request also looks every `SAFETY_S` whatever it heard
(a lost event, an overflowed queue), and where inotify cannot be set up (a network
filesystem) it looks every `POLL_S`, as before notes.

A thousand waiting requests cost the event loop nothing while nothing happens; before,
each looked at the spool every 5 ms on the loop's own thread, and some 80 of them filled
it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from voicedrop.spool.jobs import Spool

log = structlog.get_logger(__name__)
SAFETY_S = 0.5  # with inotify: a look this often whatever was heard
POLL_S = 0.005  # without it: how often a follower looks


class Note:
    """One request's wait for news of one job."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float) -> None:
        self.loop = loop
        self.period_s = period_s
        self._event = asyncio.Event()

    def hear(self) -> None:
        """From the watcher's thread."""
        self.loop.call_soon_threadsafe(self._event.set)

    async def wait(self, most_s: float | None = None) -> None:
        """Until something of the job changed, or `period_s` (at most `most_s`) passed."""
        timeout = self.period_s if most_s is None else min(self.period_s, most_s)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class Notes(FileSystemEventHandler):
    """The spool's changes, told to the requests that follow the jobs they concern."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._roots = {
            spool.inbox: "inbox",
            spool.work: "work",
            spool.outbox: "outbox",
            spool.failed: "failed",
        }
        self._lock = threading.Lock()
        self._waiting: dict[str, set[Note]] = {}
        self._observer: Any = None
        self._started = False
        self.period_s = POLL_S

    def start(self) -> None:
        """Watch the spool (once; later calls do nothing)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        try:
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
            self.spool.ensure()
            for root, name in self._roots.items():
                observer.schedule(self, str(root), recursive=name == "work")
            observer.start()
        except (OSError, ImportError) as exc:  # a network filesystem, no inotify: look often
            log.info("http.notes_polling", why=str(exc))
            return
        self._observer, self.period_s = observer, SAFETY_S

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    @contextmanager
    def following(self, job_id: str) -> Iterator[Note]:
        """A note for `job_id`, heard while the block runs."""
        self.start()
        note = Note(asyncio.get_running_loop(), self.period_s)
        with self._lock:
            self._waiting.setdefault(job_id, set()).add(note)
        try:
            yield note
        finally:
            with self._lock:
                notes = self._waiting.get(job_id)
                if notes is not None:
                    notes.discard(note)
                    if not notes:
                        del self._waiting[job_id]

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            job_id = self._job_of(path if isinstance(path, str) else path.decode())
            if job_id is None:
                continue
            with self._lock:
                notes = list(self._waiting.get(job_id, ()))
            for note in notes:
                note.hear()

    def _job_of(self, path: str) -> str | None:
        """The job a path of the spool names: inbox/<id>.json, work/<id>/…, outbox/<id>/…"""
        if not path:
            return None
        where = Path(path)
        for root in self._roots:
            try:
                parts = where.relative_to(root).parts
            except ValueError:
                continue
            if not parts:
                return None
            return parts[0].removesuffix(".json")
        return None
