"""Who runs which job, when several daemons share a spool: flock(2) leases.

A claimed job is leased by the daemon that claimed it: an exclusive flock on
`work/<job-id>/.lease`, held until the job is committed. The kernel releases it when
that daemon dies, even by kill -9, so a job whose lease can be taken has no live owner
and may be recovered; one whose lease cannot be taken is left alone. While a manifest is
being claimed, the inbox file itself is flock'ed, so two daemons never race for it.
Network filesystems honour these locks as far as their server does (NFSv4, SMB).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LEASE = ".lease"


class Leases:
    """The leases one daemon holds (one open file each), by job id."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def take(self, job_dir: Path) -> bool:
        """Lease the job in `job_dir` (ours from now on); False if a live daemon holds it
        or the folder is gone (committed, or cleared by its owner)."""
        if job_dir.name in self._held:
            return True
        try:
            fd = os.open(job_dir / LEASE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            return False
        if not _lock(fd):
            return False
        self._held[job_dir.name] = fd
        return True

    def release(self, job_id: str) -> None:
        """Give up a job's lease (after its commit)."""
        fd = self._held.pop(job_id, None)
        if fd is not None:
            os.close(fd)

    def owns(self, job_id: str) -> bool:
        return job_id in self._held


def hold_inbox_file(path: Path) -> int | bool:
    """An flock on an inbox file while it is claimed: the fd (close it when done), False
    if another claimer holds it or the file is gone, True if it cannot be opened (a
    symlink, say: the claim goes on, and the job fails on it with a report)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return fd if _lock(fd) else False


def _lock(fd: int) -> bool:
    """Lock without waiting; on failure the fd is closed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    return True
