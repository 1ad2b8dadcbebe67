"""One daemon per state directory: an exclusive lock on `<state>/.voicedrop.lock`.

Daemons may share a spool (each job is leased by the daemon running it, see spool.py),
but not a state directory: they would write the same status file and footprints. The
lock is an flock(2) on an open file: the kernel releases it when its holder dies, even
by kill -9, so a crash never leaves a stale lock behind (the file stays; its content is
only the last holder's pid, for the message). Network filesystems honour it as far as
their server does (NFSv4 and SMB map it to their own locks).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from voicedrop.errors import AlreadyRunningError


class DaemonLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another voicedrop daemon (pid {holder}) is already running with the state "
                f"directory {self.path.parent}: to start it again with other options, stop "
                f"it first (kill {holder}, or Ctrl-C where it runs). A second daemon on the "
                f"same spool (one per GPU, say) needs its own state_dir (VOICEDROP_STATE_DIR)"
            ) from None
        try:  # the pid is only for the message above: a full disk must not stop a start
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
