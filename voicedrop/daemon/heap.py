"""Giving freed heap memory back to the system, between jobs.

glibc keeps what a process frees in its arenas for reuse, and the audio buffers, feature
matrices and pitch curves of each conversion leave them fragmented: over a long run a
daemon's RSS climbs although nothing leaks (a soak of RVC jobs: +250 MB by job 100, all
of it returned by one malloc_trim). The service trims when the queue runs dry and at
most every TRIM_EVERY_S while it is busy: a trim of a large heap takes 10 to 130 ms, which
a job must not wait for. Where the C library has no malloc_trim (musl, macOS) nothing
happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

from voicedrop.daemon.listeners import Listener
from voicedrop.report import JobReport

TRIM_EVERY_S = 30.0


class Heap(Listener):
    """A listener: it hears each finished job, and the loop tells it when it is idle."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._trim = _malloc_trim()
        self._last = clock()
        self._ran = False  # a job finished since the last trim
        self.trims = 0

    def finished(self, report: JobReport) -> None:
        """Busy: trim at most every TRIM_EVERY_S."""
        self._ran = True
        if self.clock() - self._last >= TRIM_EVERY_S:
            self.trim()

    def idle(self) -> None:
        """The queue ran dry: trim if a job ran since the last trim."""
        if self._ran:
            self._ran = False
            self.trim()

    def trim(self) -> None:
        self._last = self.clock()
        self._ran = False
        if self._trim is not None:
            self._trim(0)
            self.trims += 1


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
        return trim
    except (OSError, AttributeError):
        return None
