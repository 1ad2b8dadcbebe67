"""Reading a manifest file: the one way every part of voicedrop takes one from disk.

The daemon's queue (its look-ahead), the executor, `validate`/`submit` and the dashboard
all read inbox files, and an inbox is a shared folder: whatever lies there is hostile.
So a manifest is opened without following a symlink (unless the caller names the file
itself, as `validate FILE` does), without blocking (a FIFO named `job.json` must not
hang the daemon), checked to be a regular file within the size limit before a byte is
read, and parsed by `parse_manifest`. Every way this can fail is a ManifestError that
says why: never another exception, never a wait.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Protocol

from voicedrop.config import Limits
from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest, parse_manifest

KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symlink",
}


def kind_of(mode: int) -> str:
    """'a FIFO', 'a directory' …: what a file that is not a regular file is, in words."""
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_manifest(path: Path, limits: Limits, *, follow_symlinks: bool = False) -> Manifest:
    """The manifest in `path`, read under `limits`; a ManifestError naming what is wrong."""
    raw = read_manifest_bytes(path, limits.max_manifest_bytes, follow_symlinks=follow_symlinks)
    return parse_manifest(
        raw, max_bytes=limits.max_manifest_bytes, max_text_chars=limits.max_text_chars
    )


def read_manifest_bytes(path: Path, max_bytes: int, *, follow_symlinks: bool = False) -> bytes:
    """A manifest file's bytes, read as a hostile file is: no symlink followed, no blocking
    open (a FIFO), a regular file only, its size checked before a byte is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ManifestError("the manifest is a symlink; symlinks are refused") from None
        raise ManifestError(f"the manifest cannot be opened: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ManifestError(f"the manifest is {kind_of(st.st_mode)}, not a file")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_bytes:  # say the real size, read none of it
            raise ManifestError(f"manifest is {st.st_size} bytes; the limit is {max_bytes}")
        try:
            return fh.read(max_bytes + 1)
        except OSError as exc:
            raise ManifestError(f"the manifest cannot be read: {exc.strerror}") from None


class JobCheck(Protocol):
    """What the client and the HTTP side ask of the engines about a job — whether it can
    run, which models it would use — given to them by the entry point, so that neither
    imports an engine (pipeline/plan.py's Planner is the one implementation)."""

    @property
    def engine_names(self) -> list[str]: ...

    def check(self, manifest: Manifest, reference: Path | None) -> None:
        """Raise ManifestError or EngineUnavailableError, naming the field."""
        ...

    def keys(self, manifest: Manifest) -> set[str]: ...

    def model_keys(self) -> list[str]:
        """Every model the configuration can load, by residency key."""
        ...
