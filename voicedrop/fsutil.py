"""Durable writes: temp file → fsync → rename, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success fsync it and rename it into place."""
    if not overwrite and final.exists():
        raise FileExistsError(f"refusing to overwrite {final}")
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(final: Path, data: bytes | str, *, overwrite: bool = False) -> None:
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.write_bytes(payload)
