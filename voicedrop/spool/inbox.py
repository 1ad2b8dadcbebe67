"""The inbox as a folder: which of its entries are would-be manifests, and their listing.

A shared drop folder holds anything: only `*.json` names that are not hidden, partial,
editor backups or OS junk are candidates, and they are listed without following a symlink
(the queue decides, per entry, whether it can be taken: a FIFO or a folder named like a
manifest is listed too, so that it is failed with a report rather than lying there).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

JUNK = {".ds_store", "thumbs.db", "desktop.ini"}
IGNORED_SUFFIXES = (".partial", ".tmp", ".swp", "~")


def is_candidate(name: str) -> bool:
    """A manifest the daemon may take: `*.json`, not hidden, not a partial or OS junk."""
    lower = name.lower()
    return (
        lower.endswith(".json")
        and not name.startswith((".", "~"))
        and lower not in JUNK
        and not lower.endswith(IGNORED_SUFFIXES)
    )


@dataclass(frozen=True)
class InboxFile:
    path: Path
    size: int
    mtime_ns: int
    regular: bool = True  # False: a FIFO, a directory, a socket … named like a manifest


def entry(path: Path) -> InboxFile | None:
    """One inbox entry as the queue sees it (never following a symlink); None if gone."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return InboxFile(path, st.st_size, st.st_mtime_ns, stat.S_ISREG(st.st_mode))


def list_candidates(inbox: Path) -> list[InboxFile] | None:
    """The inbox's would-be manifests, whatever their kind (names filtered before any stat:
    a FIFO or a directory named `x.json` is listed too, so that it is failed with a report
    instead of lying there forever); None if the inbox is gone."""
    try:
        names = [e.name for e in os.scandir(inbox) if is_candidate(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [f for f in (entry(inbox / name) for name in names) if f is not None]
