"""Polling for network filesystems: one listing per interval, a stat only of would-be jobs.

watchdog's PollingObserver stats every entry of the inbox every interval, so its idle
cost grew with whatever lay there (5,000 unrelated files: 6 % CPU). Here the listing's
names are filtered first (spool.is_candidate) and only candidates are stat'ed; a change
in their names, sizes or mtimes wakes the loop, which lists the inbox itself anyway.
Subfolders (refs/, .incoming/) are never walked.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from voicedrop.daemon.spool import list_candidates
from voicedrop.daemon.wakeup import Waker

log = structlog.get_logger(__name__)
Snapshot = frozenset[tuple[str, int, int]] | None


def snapshot(inbox: Path) -> Snapshot:
    """(name, size, mtime) of each candidate manifest; None when the inbox is gone."""
    found = list_candidates(inbox)
    return None if found is None else frozenset((f.path.name, f.size, f.mtime_ns) for f in found)


class InboxPoller:
    """A thread with the observer's lifecycle (start, stop, join, is_alive)."""

    emitters: tuple[()] = ()  # nothing beside the thread that could die on its own

    def __init__(self, inbox: Path, interval_s: float, wake: Waker) -> None:
        self.inbox = inbox
        self.interval_s = interval_s
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicedrop-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        last = snapshot(self.inbox)
        while not self._stop.wait(self.interval_s):
            try:
                now = snapshot(self.inbox)
            except OSError as exc:  # the share is away: the loop's own scans report it
                log.warning("poller.unreadable", inbox=str(self.inbox), error=str(exc))
                continue
            if now != last:
                last = now
                self.wake.set()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()
