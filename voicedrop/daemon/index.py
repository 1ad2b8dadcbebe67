"""The inbox's would-be manifests, kept current from events instead of a listing per event.

A drop folder on a NAS collects thousands of files that are not jobs (recordings,
thumbnails, editor backups). Listing it on every event made each drop cost time in
proportion to that clutter. Here a full listing is made only when events may have been
missed — at start, after an inotify queue overflow, when the watch is re-armed, when the
poller sees the folder itself change, and every `scan_interval_s` as a safety net —
and an event re-stats just the entry it names. Events stay hints: the listing, made
often enough, is still the truth.
"""

from __future__ import annotations

import threading
from pathlib import Path

from voicedrop.spool.inbox import InboxFile, entry, is_candidate, list_candidates


class InboxIndex:
    """The candidates of one inbox. `changed` and `relist` may be called from the
    watcher's thread; `files` is called by the queue."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._lock = threading.Lock()
        self._full = True
        self._changed: set[str] = set()
        self._files: dict[str, InboxFile] = {}
        self._sorted: list[InboxFile] = []
        self.listings = 0  # full listings made (benchmarks and tests read it)

    def relist(self) -> None:
        """Events may have been missed: the next `files()` lists the folder."""
        with self._lock:
            self._full = True

    def changed(self, name: str) -> None:
        """The entry `name` of the inbox may have appeared, changed or gone."""
        if is_candidate(name):
            with self._lock:
                self._changed.add(name)

    def files(self) -> list[InboxFile]:
        """The candidates, oldest first (by mtime, then name)."""
        with self._lock:
            full, changed = self._full, self._changed
            self._full, self._changed = False, set()
        if full:
            self.listings += 1
            listed = list_candidates(self.inbox) or []
            self._files = {f.path.name: f for f in listed}
        elif changed:
            for name in changed:
                found = entry(self.inbox / name)
                if found is None:
                    self._files.pop(name, None)
                else:
                    self._files[name] = found
        if full or changed:
            self._sorted = sorted(self._files.values(), key=lambda f: (f.mtime_ns, f.path.name))
        return list(self._sorted)
