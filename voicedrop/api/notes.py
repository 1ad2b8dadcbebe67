"""What happens to a job, as the HTTP side hears of it: a note per change, not a poll.

A request that follows a job (its audio, its end) waits for a note that something of that
job changed — its manifest claimed from the inbox, its live stream grown, its results
committed to the outbox or failed — and then looks once, off the event loop. The notes
come from inotify read on the event loop itself (asyncinotify: the kernel's events as
they come, one file descriptor per HTTP server): the inbox, the outbox, failed/, and the
work folder with each job's folder and live stream under it, watched as they appear.
Notes are hints: a waiting request also looks every `SAFETY_S` whatever it heard (a lost
event, an overflowed queue). Where inotify cannot see the daemon's writes — a spool on a
network filesystem, whose daemon may run on another host — or cannot be set up, or
`[watcher] mode = "polling"`, a follower looks every `POLL_S` instead, as before notes.

watchdog (the daemon's inbox watcher) is not used here: it holds a rename's first half
for half a second to pair it, and every later event of its watch waits behind it, so
a job committed (a rename) would delay the next job's stream by up to 0.5 s.

A thousand waiting requests cost the event loop nothing while nothing happens; before,
each looked at the spool every 5 ms on the loop's own thread, and some 80 of them filled
it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from voicedrop.fsutil import filesystem_type, needs_polling
from voicedrop.spool.jobs import Spool

log = structlog.get_logger(__name__)
SAFETY_S = 0.5  # with inotify: a look this often whatever was heard
POLL_S = 0.005  # without it: how often a follower looks
TREE_DEPTH = 2  # work/<job>/stream: the folders of the work tree that are watched


class Note:
    """One request's wait for news of one job (on the event loop)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._event = asyncio.Event()

    def hear(self) -> None:
        self._event.set()

    async def wait(self, most_s: float | None = None) -> None:
        """Until something of the job changed, or `period_s` (at most `most_s`) passed."""
        timeout = self.period_s if most_s is None else min(self.period_s, most_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class Notes:
    """The spool's changes, told to the requests that follow the jobs they concern."""

    def __init__(self, spool: Spool, mode: str = "auto") -> None:
        self.spool, self.mode = spool, mode
        self._roots = (spool.inbox, spool.work, spool.outbox, spool.failed)
        self._waiting: dict[str, set[Note]] = {}
        self._inotify: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._started = False
        self.period_s = POLL_S

    def start(self) -> None:
        """Watch the spool (once; later calls do nothing)."""
        if self._started:
            return
        self._started = True
        why = self._no_inotify()
        if why is None:
            try:
                from asyncinotify import Inotify

                self.spool.ensure()
                self._inotify = Inotify()
                for root in self._roots:
                    self._watch(root, TREE_DEPTH if root == self.spool.work else 0)
                self.period_s = SAFETY_S
                return
            except (OSError, ValueError, ImportError) as exc:
                why = f"inotify could not be set up ({exc})"
                self.close()
        log.info("http.notes_polling", why=why, every_s=POLL_S)

    def _no_inotify(self) -> str | None:
        if self.mode == "polling":
            return "[watcher] mode is polling"
        fstype = filesystem_type(self.spool.root)
        if self.mode == "auto" and needs_polling(fstype):
            return f"the spool is on a network filesystem ({fstype})"
        return None

    def _watch(self, folder: Path, depth: int) -> None:
        """Watch `folder`, and its folders `depth` levels down (the work tree)."""
        from asyncinotify import Mask

        mask = Mask.CREATE | Mask.DELETE | Mask.MODIFY | Mask.MOVED_FROM | Mask.MOVED_TO
        try:
            self._inotify.add_watch(folder, mask | Mask.CLOSE_WRITE | Mask.ONLYDIR)
            if depth:
                for child in folder.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        self._watch(child, depth - 1)
        except OSError:  # gone already (a job that ended): nothing of it to hear
            return

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    @contextmanager
    def following(self, job_id: str) -> Iterator[Note]:
        """A note for `job_id`, heard while the block runs (inside the event loop)."""
        self.start()
        if self._inotify is not None and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(self._read())
        note = Note(self.period_s)
        self._waiting.setdefault(job_id, set()).add(note)
        try:
            yield note
        finally:
            notes = self._waiting.get(job_id)
            if notes is not None:
                notes.discard(note)
                if not notes:
                    del self._waiting[job_id]

    async def _read(self) -> None:
        from asyncinotify import Mask

        inotify = self._inotify
        while inotify is not None and inotify is self._inotify:
            try:
                event = await inotify.get()
            except (OSError, RuntimeError) as exc:  # closed, or its loop is going
                log.debug("http.notes_ended", error=str(exc))
                return
            path = event.path
            if path is None:
                continue
            depth = self._depth_in_work(path)
            new = Mask.CREATE in event.mask or Mask.MOVED_TO in event.mask
            if new and Mask.ISDIR in event.mask and depth is not None and depth < TREE_DEPTH:
                self._watch(path, TREE_DEPTH - depth - 1)  # and what it already holds
            job_id = self._job_of(path)
            for note in list(self._waiting.get(job_id, ())) if job_id else ():
                note.hear()

    def _depth_in_work(self, path: Path) -> int | None:
        try:
            return len(path.relative_to(self.spool.work).parts) - 1
        except ValueError:
            return None

    def _job_of(self, path: Path) -> str | None:
        """The job a path of the spool names: inbox/<id>.json, work/<id>/…, outbox/<id>/…"""
        for root in self._roots:
            try:
                parts = path.relative_to(root).parts
            except ValueError:
                continue
            return parts[0].removesuffix(".json") if parts else None
        return None
