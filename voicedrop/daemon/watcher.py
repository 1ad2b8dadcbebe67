"""Filesystem events → hints for the loop: 'look at the inbox now' and 'this file is complete'.

Events are hints; the inbox listing is the truth. The loop rescans at start,
on every hint and every `scan_interval_s`, so lost events (an inotify queue
overflow, a dead observer, a network mount) delay a job but never lose it.
A file is taken only when complete: closed after writing or renamed in (a
hint with its size and mtime still current), or unchanged for the stability
delay. inotify is used where it works; polling where the inbox is on a
network filesystem, where inotify cannot be set up, or when configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from voicedrop.config import Watcher as WatcherSettings
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.poller import InboxPoller
from voicedrop.daemon.wakeup import Waker
from voicedrop.fsutil import filesystem_type, needs_polling
from voicedrop.spool.inbox import InboxFile, is_candidate

log = structlog.get_logger(__name__)
TEMPORARY = (".partial", ".tmp", ".PARTIAL", ".TMP")
CHANGES = ("created", "modified", "attrib", "closed", "moved", "deleted")
HINT_KEPT_S = 10.0  # a hint of a file not yet listed is kept this long
MAX_NAMED = 1024  # files named by manifests whose first sight is remembered


class StabilityGate:
    """Decides which listed inbox files are complete enough to claim.

    A file is complete when the watcher saw it closed or moved in (a hint), or when it
    has not changed for `delay_s`. Order is kept: a file still settling that is older
    than complete ones holds them back (a file dropped before the watcher started has no
    hint and waits `delay_s`; a newer, hinted one must not overtake it), but for at most
    twice `delay_s` since it appeared, so a file written forever never blocks the queue.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._hints: dict[str, tuple[int, int, float]] = {}  # size, mtime, when (monotonic)
        self._seen: dict[str, tuple[int, int, float]] = {}
        self._appeared: dict[str, float] = {}
        self._files: dict[str, tuple[int, int, float]] = {}  # files manifests name
        self.hot_settling = 0  # hot-folder files seen, not yet complete (presets.py sets it)

    def hint_complete(self, path: str) -> None:
        """Called from the observer thread when a file was closed after writing or moved in."""
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock:
            self._hints[path] = (st.st_size, st.st_mtime_ns, time.monotonic())

    def ready(self, files: list[InboxFile], now: float, wall_now: float) -> list[InboxFile]:
        """The complete ones of `files` (oldest first), in order."""
        out = []
        with self._lock:
            hints = {key: hint[:2] for key, hint in self._hints.items()}
        seen: dict[str, tuple[int, int, float]] = {}
        appeared: dict[str, float] = {}
        held = False  # an older file is still settling: the newer ones wait for it
        for f in files:
            key = str(f.path)
            first = self._seen.get(key)
            if first is None or first[:2] != (f.size, f.mtime_ns):
                first = (f.size, f.mtime_ns, now)
            seen[key] = first
            appeared[key] = self._appeared.get(key, now)
            quiet_since_mtime = wall_now - f.mtime_ns / 1e9 >= self.delay_s
            complete = (
                hints.get(key) == (f.size, f.mtime_ns)
                or quiet_since_mtime
                or (now - first[2] >= self.delay_s)
            )
            if complete and not held:
                out.append(f)
            elif not complete and now - appeared[key] < 2 * self.delay_s:
                held = True
        self._seen, self._appeared = seen, appeared  # forget files that left the inbox
        with self._lock:  # hints of files that left, and of named files long settled
            # a hint may come before the listing shows its file (the daemon's own hot-folder
            # manifests, hinted as they are made): kept a while, so that it is not lost
            stale = time.monotonic() - max(HINT_KEPT_S, 2 * self.delay_s)
            for key, hint in list(self._hints.items()):
                if key not in seen and key not in self._files and hint[2] < stale:
                    del self._hints[key]
        return out

    def settled(self, path: str, size: int, mtime_ns: int, now: float, wall_now: float) -> bool:
        """The same rule for a file a manifest names (a reference recording, a script):
        complete when seen closed or moved in, or unchanged for `delay_s`."""
        with self._lock:
            hint = self._hints.get(path)
            hinted = hint is not None and hint[:2] == (size, mtime_ns)
        first = self._files.get(path)
        if first is None or first[:2] != (size, mtime_ns):
            first = (size, mtime_ns, now)
            if len(self._files) >= MAX_NAMED:  # forget the oldest: they are asked again
                del self._files[next(iter(self._files))]
            self._files[path] = first
        quiet = wall_now - mtime_ns / 1e9 >= self.delay_s or now - first[2] >= self.delay_s
        return hinted or quiet

    def waiting(self) -> int:
        """Files still settling: the loop looks again soon rather than at its next scan."""
        return len(self._seen) + self.hot_settling


class _Handler(FileSystemEventHandler):
    """inotify events: tell the index which entry changed, hint 'complete' on a close or a
    move in (of a manifest, or of a file a manifest may name), and wake the loop.

    Polling (poller.py) gives no such hints: a poller sees no closes, so there every
    file waits out the stability delay.
    """

    def __init__(
        self, gate: StabilityGate, wake: Waker, index: InboxIndex, folders: dict[str, str]
    ) -> None:
        self.gate = gate
        self.wake = wake
        self.index = index
        self.inbox = str(index.inbox)
        # watched folder (symlinks resolved: inotify reports nothing through a symlink)
        # -> the same folder as the queue names it (the configured inbox, inbox/refs)
        self.folders = folders
        self.watched_inbox = next(w for w, shown in folders.items() if shown == self.inbox)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.src_path == self.watched_inbox:
            if event.event_type in ("deleted", "moved"):
                self.wake.set()  # the watch went with the inbox: the loop re-arms (check)
            return
        if event.event_type not in CHANGES:  # opens and reads (ours, too) change nothing
            return
        paths = [str(event.src_path)]
        if event.event_type == "moved" and event.dest_path:
            paths.append(str(event.dest_path))
        woke = False
        for i, path in enumerate(paths):
            folder, name = os.path.split(path)
            shown = self.folders.get(folder)
            if shown is None or not name or name.startswith(".") or name.endswith(TEMPORARY):
                continue
            if shown == self.inbox:
                self.index.changed(name)
            if not event.is_directory and (event.event_type == "closed" or i > 0):
                self.gate.hint_complete(os.path.join(shown, name))  # closed, or moved in
            gone = event.event_type == "deleted" or (event.event_type == "moved" and i == 0)
            if not gone:  # a claim's move out (ours) makes nothing new to take
                woke = woke or is_candidate(name) or event.event_type in ("closed", "moved")
        if woke:
            self.wake.set()


class _Wake(FileSystemEventHandler):
    """Any change in a folder of requests wakes the loop; so does the folder's removal (its
    watch went with it: the loop re-arms, check)."""

    def __init__(self, wake: Waker, folder: str) -> None:
        self.wake = wake
        self.folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("closed", "moved", "created") or (
            event.event_type == "deleted" and event.src_path == self.folder
        ):
            self.wake.set()


class _OverflowAlarm(logging.Handler):
    """watchdog only logs an inotify queue overflow (events were lost): rescan on it."""

    def __init__(self, wake: Waker, index: InboxIndex) -> None:
        super().__init__(logging.WARNING)
        self.wake = wake
        self.index = index

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            log.warning("watcher.overflow", action="rescan")
            self.index.relist()
            self.wake.set()


class Watcher:
    """Runs a watchdog observer on the inbox; `wake` is set whenever the inbox may have changed."""

    def __init__(
        self,
        index: InboxIndex,
        settings: WatcherSettings,
        gate: StabilityGate,
        wake: Waker,
        control: Path | None = None,
        hot: list[Path] | None = None,
        inotify_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.index = index
        self.control = control  # requests to the daemon (spool/control.py): they wake it too
        self.hot = hot or []  # preset folders (presets.py): a file closed there is hinted
        self.inbox = index.inbox
        self.settings = settings
        self.gate = gate
        self.wake = wake
        self._inotify_factory = inotify_factory or _inotify_observer
        self.mode = "none"
        self._observer: Any = None
        self._alarm = _OverflowAlarm(wake, index)
        self._identity: tuple[int, int] | None = None
        self._target: str | None = None  # where a symlinked inbox points

    def _choose(self) -> tuple[str, str]:
        if self.settings.mode == "polling":
            return "polling", "configured"
        if self.settings.mode == "auto":
            fstype = filesystem_type(self.inbox)
            if needs_polling(fstype):
                return "polling", f"inbox is on a network filesystem ({fstype})"
        return "inotify", "configured" if self.settings.mode == "inotify" else "local filesystem"

    def start(self) -> None:
        logging.getLogger("watchdog").addHandler(self._alarm)
        self._identity = _identity(self.inbox)
        self._say_where()
        self.index.relist()  # whatever happened before this watch began is unknown
        mode, why = self._choose()
        if mode == "inotify":
            try:
                self._observer = self._start(self._inotify_factory())
            except OSError as exc:
                mode, why = "polling", f"inotify could not be set up ({exc})"
        if mode == "polling":
            interval = self.settings.poll_interval_s
            self._observer = InboxPoller(self.index, interval, self.wake)
            self._observer.start()
        self.mode = mode
        log.info("watcher.started", mode=mode, reason=why, inbox=str(self.inbox))

    def _start(self, observer: Any) -> Any:
        folders = {os.path.realpath(self.inbox): str(self.inbox)}
        refs = self.inbox / "refs"  # where `voicedrop submit` renames references in
        for folder in (refs, *self.hot):
            if folder.is_dir() and not folder.is_symlink():
                folders[os.path.realpath(folder)] = str(folder)
        handler = _Handler(self.gate, self.wake, self.index, folders)
        for watched in folders:
            observer.schedule(handler, watched, recursive=False)
        if self.control is not None:
            self.control.mkdir(parents=True, exist_ok=True)
            control = str(self.control)
            observer.schedule(_Wake(self.wake, control), control, recursive=False)
        observer.start()
        return observer

    def _say_where(self) -> None:
        """A symlinked inbox is followed (a drop folder that lives on a share): say where
        it points at start, and warn whenever that changes."""
        target = os.path.realpath(self.inbox) if self.inbox.is_symlink() else None
        if target == self._target:
            return
        say = log.info if self.mode == "none" else log.warning
        if target is not None:
            say("watcher.inbox_is_a_symlink", inbox=str(self.inbox), target=target)
        else:
            say("watcher.inbox_no_longer_a_symlink", inbox=str(self.inbox))
        self._target = target

    def check(self) -> None:
        """Restart a dead observer, or re-arm on an inbox that was deleted or replaced (an
        inotify watch dies with its directory, silently): events were lost, so the caller
        rescans anyway. Costs one stat per loop turn."""
        if self._observer is None:
            return
        dead = [e.watch.path for e in self._observer.emitters if not e.is_alive()]
        control = str(self.control) if self.control is not None else None
        if not self._observer.is_alive():
            log.warning("watcher.observer_died", mode=self.mode)
        elif any(path != control for path in dead) or (
            _identity(self.inbox) != self._identity  # inode numbers are reused: not enough alone
        ):
            log.warning("watcher.inbox_replaced", inbox=str(self.inbox), action="re-arm")
            (self.inbox / ".incoming").mkdir(parents=True, exist_ok=True)
        elif dead:  # the state directory's request folder, removed with the state directory
            log.warning("watcher.control_replaced", folder=str(self.control), action="re-arm")
        else:
            return
        self.stop()
        self.start()
        self.wake.set()

    def stop(self) -> None:
        logging.getLogger("watchdog").removeHandler(self._alarm)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inotify_observer() -> Any:
    from watchdog.observers.inotify import InotifyObserver

    try:
        # watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO,
        # and the events queued behind it wait too. Each claim is a move out of the
        # inbox, so a manifest dropped within 0.5 s of a claim would be seen 0.5 s late.
        # We need no pairing (a move in is all we look for), so we do not wait for it.
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

        InotifyMoveEventGrouper.delay = 0.0
    except ImportError:  # another watchdog layout: correct, only slower after claims
        log.info("watcher.move_pairing_delay_kept")
    # Full events: a file renamed in from an unwatched folder (inbox/.incoming, or
    # another directory) arrives as a move, i.e. complete, not as a bare create.
    return InotifyObserver(generate_full_events=True)
