"""Durable writes: temp file → fsync → rename, so a reader never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    final: Path, data: bytes | str, *, overwrite: bool = False, durable: bool = True
) -> None:
    """Write `data` to a temp file beside `final`, fsync it, rename it into place.

    `durable=False` skips the fsyncs: a crashed process still leaves the whole
    new file (the page cache survives it), only a power cut may lose it.
    """
    if not overwrite and final.exists():
        raise FileExistsError(f"refusing to overwrite {final}")
    payload = data.encode() if isinstance(data, str) else data
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(payload)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(final)
        if durable:
            fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
