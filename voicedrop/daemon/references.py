"""Files a manifest references (a reference recording), taken from a hostile inbox.

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


def checked_reference(root: Path, relative: str, max_bytes: int) -> Path:
    """The regular file `relative` names under `root`: no absolute path, no '..',
    no symlink anywhere on the way, not over `max_bytes`. Else a ManifestError."""
    rel = Path(relative.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ManifestError("reference path must stay inside the inbox", field="tts.voice")
    current = root
    for part in rel.parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            raise ManifestError(
                f"reference file '{relative}' not found next to the manifest", field="tts.voice"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise ManifestError(
                f"reference '{relative}' is a symlink; symlinks are refused", field="tts.voice"
            )
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"reference '{relative}' is not a regular file", field="tts.voice")
    if st.st_size > max_bytes:
        raise ManifestError(
            f"reference '{relative}' is {st.st_size} bytes; the limit is {max_bytes}",
            field="tts.voice",
        )
    return current


def open_beneath(root: Path, parts: tuple[str, ...]) -> int:
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
            f"reference changed while it was being taken ({exc.strerror}); refused",
            field="tts.voice",
        ) from None
    finally:
        os.close(fd)


def check_opened(relative: str, st: os.stat_result, max_bytes: int) -> None:
    """What was opened is a regular file of allowed size with no other hard links (a
    link to a file elsewhere would carry that file's content into the job)."""
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"reference '{relative}' is not a regular file", field="tts.voice")
    if st.st_nlink > 1:
        raise ManifestError(
            f"reference '{relative}' has other hard links; copy the file instead",
            field="tts.voice",
        )
    if st.st_size > max_bytes:
        raise ManifestError(
            f"reference '{relative}' is {st.st_size} bytes; the limit is {max_bytes}",
            field="tts.voice",
        )
