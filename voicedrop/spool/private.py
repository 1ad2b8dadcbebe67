"""A job's private inputs: files put under `inbox/refs/` for one job alone.

`voicedrop submit`, the HTTP side and the hot folders stage the files a job names (its
reference recording, its subtitle script) here under a name of their own, before its
manifest is dropped, so the manifest never arrives without them. From the moment the job
is claimed they are the job's: its first attempt moves them (one rename, no copy) into
`work/<job>/inputs/`, and every later attempt — after a kill, a transient error, or a
step aside for a job of a higher priority — finds them there. They end with the job (in
`failed/<job>/inputs/`, or removed with a job that is done), and a job cancelled before
it was claimed takes them along too (`follow`).

This module is the one owner of that rule: the folder's name, which names are private,
staging, taking and following a job that ended unclaimed.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path, PurePosixPath

from voicedrop.errors import ManifestError
from voicedrop.intake import read_manifest_bytes
from voicedrop.spool import names
from voicedrop.spool.references import check_opened

FOLDER = "refs"
PREFIX = f"{FOLDER}/"
FIELDS = (("tts", "voice"), ("script",))  # where a manifest names a private input
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def is_private(relative: str | None) -> bool:
    """A manifest's file name that points at a private input (`refs/<name>`)."""
    if not relative or not relative.startswith(PREFIX):
        return False
    parts = PurePosixPath(relative).parts
    return len(parts) == 2 and parts[1] not in ("..", ".")


def private_name(original: str, tag: str | None = None) -> str:
    """The manifest-relative name a staged file gets: unique, ending like the original."""
    return f"{PREFIX}{tag or uuid.uuid4().hex[:8]}-{PurePosixPath(original).name}"


def open_folder(inbox: Path) -> int:
    """An fd of `inbox/refs`, never through a symlink (a link there would lead a rename out
    of the spool). OSError: missing, or not a real folder (ELOOP, ENOTDIR)."""
    parent = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.open(FOLDER, _DIR_FLAGS, dir_fd=parent)
    finally:
        os.close(parent)


def take(inbox: Path, job_dir: Path, relative: str, max_bytes: int, field: str) -> Path:
    """The job's own copy of the private input `relative`: moved from the inbox on the
    job's first attempt, found in the job on every later one. ManifestError when it is
    not there, not a regular file, a link, or too big."""
    name = PurePosixPath(relative).name
    inputs = job_dir / names.INPUTS
    target = inputs / name
    what = "script" if field == "script" else "reference"
    if not os.path.lexists(target):
        inputs.mkdir(exist_ok=True)
        try:
            folder = open_folder(inbox)
        except OSError as exc:
            raise ManifestError(
                f"{what} '{relative}': the inbox's {PREFIX} folder cannot be read "
                f"({exc.strerror}); refused",
                field=field,
            ) from None
        try:
            os.rename(name, target, src_dir_fd=folder)  # the entry itself, never a link's target
        except FileNotFoundError:
            raise ManifestError(
                f"{what} file '{relative}' not found next to the manifest", field=field
            ) from None
        finally:
            os.close(folder)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ManifestError(
            f"{what} '{relative}' is not a regular file ({exc.strerror}); refused", field=field
        ) from None
    try:
        check_opened(relative, os.fstat(fd), max_bytes, field)
    finally:
        os.close(fd)
    return target


def named(manifest: object) -> list[str]:
    """The private inputs a manifest (as parsed JSON, whatever it holds) names."""
    found = []
    for path in FIELDS:
        node = manifest
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str) and is_private(node):
            found.append(node)
    return found


def follow(inbox: Path, job_dir: Path, max_manifest_bytes: int) -> list[str]:
    """Move the private inputs of a job that ended without being claimed (cancelled in the
    inbox) into its folder, as a claimed job's are: the names moved. Whatever a hostile
    manifest holds, nothing outside refs/ is touched."""
    data = _manifest(job_dir / names.MANIFEST, max_manifest_bytes)
    moved = []
    for relative in named(data):
        try:
            take(inbox, job_dir, relative, max_bytes=2**63 - 1, field="script")
            moved.append(relative)
        except ManifestError:
            pass
    return moved


def orphans(inbox: Path, work: Path, before: float, max_manifest_bytes: int) -> list[str]:
    """Names in refs/ that nothing names — no manifest waiting in the inbox, no claimed job,
    no hot-folder take under way (`inbox/.incoming/.preset-<name>.…`) — and that are older
    than `before` (wall time: a submit stages its files before its manifest). Left by a
    producer killed between the two, or by an older version that lost a hot-folder file."""
    try:
        entries = [e for e in os.scandir(inbox / FOLDER) if not e.name.startswith(".")]
    except OSError:
        return []
    if not entries:
        return []
    named_here: set[str] = set()
    for manifest in [*inbox.glob("*.json"), *work.glob(f"*/{names.MANIFEST}")]:
        data = _manifest(manifest, max_manifest_bytes)
        named_here.update(PurePosixPath(n).name for n in named(data))
    try:
        taking = [e.name for e in os.scandir(inbox / ".incoming") if e.name.startswith(".preset-")]
    except OSError:
        taking = []
    found = []
    for entry in entries:
        if entry.name in named_here or any(t.startswith(f".preset-{entry.name}.") for t in taking):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < before:
                found.append(entry.name)
        except OSError:
            continue
    return sorted(found)


def _manifest(path: Path, max_bytes: int) -> object:
    """A manifest's JSON, read as the intake reads one (no link, no blocking open, a
    regular file, bounded), or None."""
    try:
        return json.loads(read_manifest_bytes(path, max_bytes))
    except (ManifestError, ValueError, RecursionError):
        return None
