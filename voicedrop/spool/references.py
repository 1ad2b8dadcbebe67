"""Files a manifest references (a reference recording, a script), taken from a hostile inbox.

Every error names the manifest field that named the file (`field`: tts.voice, script).

Checked by path first (relative, no '..', no symlink on the way, a regular file, not
too big), then again on what is actually opened: every component is opened relative to
the one before with O_NOFOLLOW, so a symlink swapped in between cannot lead out, and the
opened file must be regular, within the size limit and have no other hard links.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from voicedrop.errors import ManifestError


def checked_reference(root: Path, relative: str, max_bytes: int, field: str = "tts.voice") -> Path:
    """The regular file `relative` names under `root`: no absolute path, no '..',
    no symlink anywhere on the way, not over `max_bytes`. Else a ManifestError."""
    rel = Path(relative.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ManifestError(f"{_what(field)} path must stay inside the inbox", field=field)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            raise ManifestError(
                f"{_what(field)} file '{relative}' not found next to the manifest", field=field
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise ManifestError(
                f"{_what(field)} '{relative}' is a symlink; symlinks are refused", field=field
            )
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"{_what(field)} '{relative}' is not a regular file", field=field)
    if st.st_size > max_bytes:
        raise ManifestError(
            f"{_what(field)} '{relative}' is {st.st_size} bytes; the limit is {max_bytes}",
            field=field,
        )
    return current


def open_beneath(root: Path, parts: tuple[str, ...], field: str = "tts.voice") -> int:
    """Open root/parts... for reading, following no symlink on the way (openat walk)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        raise ManifestError(
            f"{_what(field)} changed while it was being taken ({exc.strerror}); refused",
            field=field,
        ) from None
    finally:
        os.close(fd)


def check_opened(
    relative: str, st: os.stat_result, max_bytes: int, field: str = "tts.voice"
) -> None:
    """What was opened is a regular file of allowed size with no other hard links (a
    link to a file elsewhere would carry that file's content into the job)."""
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"{_what(field)} '{relative}' is not a regular file", field=field)
    if st.st_nlink > 1:
        raise ManifestError(
            f"{_what(field)} '{relative}' has other hard links; copy the file instead",
            field=field,
        )
    if st.st_size > max_bytes:
        raise ManifestError(
            f"{_what(field)} '{relative}' is {st.st_size} bytes; the limit is {max_bytes}",
            field=field,
        )


def _what(field: str) -> str:
    return "script" if field == "script" else "reference"
