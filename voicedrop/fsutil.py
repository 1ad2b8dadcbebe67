"""Durable writes: temp file → fsync → rename, so a reader never sees half a file; and
writes of the daemon's own state that a full disk must never turn into a crash."""

from __future__ import annotations

import errno
import os
import socket
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Who writes a temp file: its pid and a tag of its host, so that a spool shared by daemons
# on several hosts (a NAS) never has one host remove another's temp file as a dead pid's.
HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()):08x}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path, pid: int | None = None, host: str = HOST_TAG) -> Path:
    """Where `write_atomic` writes `final` before renaming it into place: hidden, ending
    in .tmp (the watcher and the spool skip such names), named after its writer."""
    return final.with_name(f".{final.name}.{os.getpid() if pid is None else pid}-{host}.tmp")


def write_atomic(
    final: Path,
    data: bytes | str,
    *,
    overwrite: bool = False,
    durable: bool = True,
    sole_writer: bool = False,
) -> None:
    """Write `data` to a temp file beside `final`, fsync it, rename it into place.

    `durable=False` skips the fsyncs: a crashed process still leaves the whole
    new file (the page cache survives it), only a power cut may lose it.
    `sole_writer`: only this process writes `final` (the daemon's own state directory),
    so the temp file has a fixed name and one a kill -9 left behind is simply reused.
    """
    if not overwrite and final.exists():
        raise FileExistsError(f"refusing to overwrite {final}")
    payload = data.encode() if isinstance(data, str) else data
    tmp = final.with_name(f".{final.name}.tmp") if sole_writer else temp_path(final)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a half-written temp file left behind
        raise
    if durable:
        fsync_dir(final.parent)


def remove_orphan_temps(temps: Iterable[Path]) -> int:
    """Remove the temp files `write_atomic` left when its process was killed mid-write
    (`.<name>.<pid>-<host tag>.tmp`, written on this host by a pid that no longer runs);
    a live writer's are kept, and so are another host's. Nothing else ever removes them:
    a folder that is only written to would keep one per kill. The number removed."""
    removed = 0
    for temp in temps:
        if not orphaned(temp.name):
            continue  # not write_atomic's, another host's, or its writer still runs
        try:
            temp.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def writer_tag() -> str:
    """`<pid>-<host tag>`: what a file of a writer's own carries before its suffix."""
    return f"{os.getpid()}-{HOST_TAG}"


def orphaned(name: str) -> bool:
    """A file named `….<pid>-<host tag>.<suffix>` whose writer, on this host, no longer runs."""
    writer = name.rsplit(".", 2)[-2] if name.count(".") >= 3 else ""
    pid, _, host = writer.partition("-")
    return pid.isdigit() and host in ("", HOST_TAG) and not _running(int(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class StateWrites:
    """Writes of state that voicedrop can live without for a while (the status file,
    measured footprints, cached latents, the metrics textfile): a failure (a full disk,
    a read-only remount, lost permissions) is never fatal. It is logged once when an
    episode begins and once when writes succeed again; every write in between is tried
    as usual and fails quietly. One instance per owner of such files."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing: str | None = None  # the first error of the episode under way

    def attempt(self, path: Path, write: Callable[[], object]) -> bool:
        """Run `write` (which writes `path`); False if it failed with an OSError."""
        try:
            write()
        except OSError as exc:
            if self.failing is None:
                self.failing = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"
                log.error(
                    "state.write_failed",
                    what=self.what,
                    path=str(path),
                    error=self.failing,
                    action="retried on every write; said again when it works",
                )
            return False
        if self.failing is not None:
            log.info("state.write_recovered", what=self.what, path=str(path), was=self.failing)
            self.failing = None
        return True

    def replace(self, path: Path, data: bytes | str) -> bool:
        """Replace `path` with `data`, a file only this daemon writes (temp file and
        rename: never half a file, no temp file left behind); False if that failed."""
        return self.attempt(
            path, lambda: write_atomic(path, data, overwrite=True, durable=False, sole_writer=True)
        )


# where inotify sees only this host's changes: watched by polling
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "davfs"}


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem holding `path` (longest matching mount point)."""
    target = os.path.realpath(path)
    best, fstype = "", None
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, fstype = mount, right.split()[0]
    return fstype


def needs_polling(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NETWORK_FS or fstype.startswith("fuse"))
