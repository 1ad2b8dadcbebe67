"""One daemon per spool: an exclusive lock on `<spool>/.voicedrop.lock`, held while it runs.

A second daemon on the same spool would "recover" the first one's running job and
synthesise it again, and both would write the same state files. The lock is an
flock(2) on an open file: the kernel releases it when its holder dies, even by
kill -9, so a crash never leaves a stale lock behind (the file stays; its content
is only the last holder's pid, for the message). Network filesystems honour it as
far as their server does (NFSv4 and SMB map it to their own locks).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from voicedrop.errors import AlreadyRunningError


class SpoolLock:
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
                f"another voicedrop daemon (pid {holder}) is running on this spool "
                f"({self.path.parent}); run one daemon per spool: a second daemon "
                f"(for a second GPU, say) needs a spool of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SpoolLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
