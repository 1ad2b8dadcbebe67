"""Polling for network filesystems: a stat of the folder per interval, a listing when it changed.

watchdog's PollingObserver stats every entry of the inbox every interval, so its idle
cost grew with whatever lay there (5,000 unrelated files: 6 % CPU). Here each interval
costs one stat of the inbox itself and one of each would-be manifest already seen (a file
written in place changes its size and mtime, not the folder's); the folder is listed
only when its own mtime says entries came or went (and for a while after, since some
filesystems keep mtimes in whole seconds). Any change wakes the loop and marks a listing
due in the inbox index. The loop's periodic full scan stays the safety net.
"""

from __future__ import annotations

import os
import threading
import time

import structlog

from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.wakeup import Waker
from voicedrop.spool.inbox import entry, list_candidates

log = structlog.get_logger(__name__)
Snapshot = frozenset[tuple[str, int, int]] | None
COARSE_MTIME_S = 2.0  # a folder changed this recently is listed again (whole-second mtimes)


class InboxPoller:
    """A thread with the observer's lifecycle (start, stop, join, is_alive)."""

    emitters: tuple[()] = ()  # nothing beside the thread that could die on its own

    def __init__(self, index: InboxIndex, interval_s: float, wake: Waker) -> None:
        self.index = index
        self.inbox = index.inbox
        self.interval_s = interval_s
        self.wake = wake
        self.listings = 0
        self._stamp: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicedrop-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def snapshot(self, last: Snapshot) -> Snapshot:
        """(name, size, mtime) of each would-be manifest; None when the inbox is gone."""
        try:
            st = os.stat(self.inbox)
        except (FileNotFoundError, NotADirectoryError):
            return None
        stamp = (st.st_ino, st.st_mtime_ns)
        recent = time.time() - st.st_mtime_ns / 1e9 < COARSE_MTIME_S
        if last is None or stamp != self._stamp or recent:
            self._stamp = stamp
            self.listings += 1
            found = list_candidates(self.inbox)
        else:  # no entry came or went: only those known can have changed
            found = [f for f in (entry(self.inbox / n) for n, _, _ in last) if f is not None]
        return (
            None if found is None else frozenset((f.path.name, f.size, f.mtime_ns) for f in found)
        )

    def _run(self) -> None:
        last: Snapshot = None
        unreadable = False
        while True:
            try:
                now = self.snapshot(last)
                unreadable = False
            except OSError as exc:  # the share is away: said once, until it is back
                if not unreadable:
                    log.warning("poller.unreadable", inbox=str(self.inbox), error=str(exc))
                unreadable, now = True, None
            if now != last:
                last = now
                self.index.relist()
                self.wake.set()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()
