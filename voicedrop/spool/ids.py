"""Client ids: a manifest's `id` runs once, among every daemon of a spool.

`<spool>/.ids/<sha256 of the id>.json` names the job that holds an id. It is reserved
when a job's attempt starts, under an flock on `.ids/.lock` that every daemon of the
spool takes for the read and the tiny write, so two copies dropped together never both
run. A holder is a job that is done or still in `work/` (running, or waiting for a
retry, here or on another daemon); one that failed for good gives its id back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import structlog

from voicedrop.fsutil import write_atomic
from voicedrop.spool import names

log = structlog.get_logger(__name__)


class ClientIds:
    def __init__(self, folder: Path, outbox: Path, work: Path) -> None:
        self.folder = folder
        self.outbox = outbox
        self.work = work

    def _path(self, client_id: str) -> Path:
        return self.folder / (hashlib.sha256(client_id.encode()).hexdigest() + ".json")

    def holder(self, client_id: str) -> str | None:
        """The job that holds a client id: one done, or one in work/. A holder that
        failed for good, or is gone, holds nothing."""
        try:
            job_id = str(json.loads(self._path(client_id).read_text())["job_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (self.outbox / job_id / names.REPORT).exists() or (self.work / job_id).is_dir():
            return job_id
        return None

    def reserve(self, client_id: str, job_id: str) -> str | None:
        """Reserve a client id for `job_id`: None when it is ours now (or was already),
        else the job that holds it (this one is then a duplicate). An OSError (a full
        disk) leaves nothing reserved."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a tiny write
            holder = self.holder(client_id)
            if holder is not None and holder != job_id:
                return holder
            if holder is None:
                record = json.dumps({"id": client_id, "job_id": job_id})
                write_atomic(self._path(client_id), record, overwrite=True)
            return None
        finally:
            os.close(fd)  # closing releases the lock

    def release(self, client_id: str, job_id: str) -> None:
        """Give a client id back when its job failed for good: a later copy may run."""
        path = self._path(client_id)
        try:
            if json.loads(path.read_text()).get("job_id") == job_id:
                path.unlink()
        except (OSError, ValueError, AttributeError) as exc:  # a stale entry holds nothing
            log.warning("spool.id_not_released", job_id=job_id, error=str(exc))
