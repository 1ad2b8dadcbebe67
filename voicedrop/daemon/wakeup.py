"""A wake-up flag that a signal handler may set: a self-pipe, not a threading.Event.

threading.Event.set() takes a lock; a signal handler runs on the main thread,
which may hold that very lock inside Event.wait() or clear(), and then waits on
itself for ever (seen: a SIGTERM that never stopped the daemon). Writing a byte
to a pipe is async-signal-safe, and select() wakes on it.
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import Protocol


class Waker(Protocol):
    """What the loop needs of a wake-up flag (threading.Event fits, for tests)."""

    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        """Safe from signal handlers and any thread; a full pipe already means 'set'."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"!")

    def is_set(self) -> bool:
        return bool(select.select([self._read], [], [], 0)[0])

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or `timeout`; the flag stays set until clear()."""
        return bool(select.select([self._read], [], [], timeout)[0])

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read = self._write = -1

    def __del__(self) -> None:
        if getattr(self, "_read", -1) >= 0:
            self.close()
