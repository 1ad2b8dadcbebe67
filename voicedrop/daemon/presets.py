"""Hot folders: a subtitle file or plain text saved into `inbox/<preset>/` becomes a job,
with no JSON written by anyone.

`[presets.<name>]` in the configuration is the rest of a manifest — engine, voice,
conversion, output, lexicon, priority — checked at start-up like a manifest; its output
is 48 kHz (and 24-bit WAV or FLAC) unless it says otherwise: what editors work at. An editing
suite's watch folder, or a person, saves `episode.srt`, `episode.vtt` or `chapter.txt`
(paragraphs become clips) into `inbox/<name>/`; once the file is complete by the inbox's
own rule (closed after writing or renamed in, or unchanged for `stable_delay_s`), the
daemon moves it beside the inbox's other private inputs (`inbox/refs/`, spool/private.py)
and drops a manifest naming it into the inbox, which then runs like any other. A file of
another kind in a preset folder is named once in the log and left alone.

Taking a file is one step that completes or leaves the file where it was. Its manifest
is written first, as an intent in `inbox/.incoming/` (a full disk fails here, nothing
moved); then the file is renamed into `refs/`; then the intent is linked into the inbox
under a free name. A daemon killed in between leaves the intent beside the moved file:
the next daemon of the spool to start finishes it (a daemon whose own publishing failed
tries again at its next collection; no listing of `.incoming/` is made otherwise).

A shared folder is hostile: a preset folder that is a symbolic link is refused (said
once), and files are found, opened and moved through the folder's own descriptor,
never through a link. A file still open for writing (a writer pausing between chunks) is
not taken, whatever its mtime says: a read lease cannot be had on it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from voicedrop.config import Settings
from voicedrop.daemon.watcher import TEMPORARY, StabilityGate
from voicedrop.errors import EngineUnavailableError, ManifestError
from voicedrop.fsutil import orphaned, write_atomic, writer_tag
from voicedrop.intake import JobCheck
from voicedrop.manifest import SAFE_NAME, SCRIPT_SUFFIXES, parse_manifest
from voicedrop.spool import private
from voicedrop.spool.claimed import job_stem
from voicedrop.spool.jobs import Spool

log = structlog.get_logger(__name__)
RESERVED = {private.FOLDER, ".incoming"}
INTENT = ".preset-"  # inbox/.incoming/.preset-<refs name>.<pid>-<host>.intent
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EDITOR_RATE, EDITOR_BIT_DEPTH = 48000, 24  # a preset's deliverables unless it says otherwise


def with_defaults(preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's manifest with what editors work at unless it says otherwise: 48 kHz, and
    24-bit for WAV and FLAC (an engine's own 22.05 or 24 kHz is not a deliverable)."""
    output = dict(preset.get("output") or {})
    output.setdefault("sample_rate", EDITOR_RATE)
    if output.get("format", "wav") in ("wav", "flac"):
        output.setdefault("bit_depth", EDITOR_BIT_DEPTH)
    return {**preset, "output": output}


def check_presets(settings: Settings, jobs: JobCheck | None = None) -> None:
    """Each preset is the rest of a manifest: a bad one stops start-up (ConfigError) — with
    `jobs`, also one naming an engine, a voice or an option this configuration cannot run
    (the first file saved into its folder would fail)."""
    for name, preset in settings.presets.items():
        key = f"presets.{name}"
        if not re.match(SAFE_NAME, name) or name in RESERVED:
            raise settings.invalid(key, name, "a folder name: letters, digits, '.', '_', '-'")
        given = sorted(set(preset) & {"text", "segments", "script", "id"})
        if given:
            raise settings.invalid(key, preset, f"{given[0]} comes from the file dropped in")
        raw = json.dumps({**with_defaults(preset), "text": "check"}).encode()
        try:
            manifest = parse_manifest(raw, max_bytes=len(raw), max_text_chars=len(raw))
            if jobs is not None:
                jobs.check(manifest, None)
        except ManifestError as exc:  # the manifest's own words: field and reason
            raise settings.invalid(key, preset, "; ".join(exc.problems)) from None
        except EngineUnavailableError as exc:
            raise settings.invalid(key, preset, f"{exc.field}: {exc.message}") from None


class Presets:
    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        gate: StabilityGate,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.presets = settings.presets
        self.spool, self.gate, self.clock, self.wall = spool, gate, clock, wall
        self._said: set[tuple[str, int]] = set()  # files of another kind, named once
        self._refused: set[str] = set()  # preset folders that are links, named once
        self._settling = 0  # files of the last collection still being written
        self._unpublished = False  # an intent of ours whose manifest could not be published

    def reconfigure(self, settings: Settings) -> None:
        """A reload: the new presets, their folders made (a removed preset's folder stays,
        with whatever is in it, and is no longer taken from)."""
        self.presets = settings.presets
        self._refused.clear()
        self.ensure()

    @property
    def folders(self) -> list[Path]:
        return [self.spool.inbox / name for name in self.presets]

    def ensure(self) -> None:
        for folder in self.folders:
            if not folder.is_symlink():  # refused when collected, said then
                folder.mkdir(parents=True, exist_ok=True)

    def collect(self) -> int:
        """Turn the complete files of the preset folders into jobs; how many."""
        if self._unpublished:
            self._unpublished = False
            self.finish_intents()
        made, self._settling = 0, 0
        for name in self.presets:
            with self._folder(name) as fd:
                if fd is None:
                    continue
                for entry in sorted(os.scandir(fd), key=lambda e: e.name):
                    if entry.name.startswith(".") or entry.name.endswith(TEMPORARY):
                        continue
                    made += self._take(name, fd, entry.name)
        self.gate.hot_settling = self._settling  # looked at again soon, not at the next scan
        return made

    @contextmanager
    def _folder(self, name: str) -> Iterator[int | None]:
        """The preset folder's descriptor, opened without following a link; None when it
        is not there, or is refused (a symbolic link: its files are outside the spool)."""
        fd = None
        try:
            fd = os.open(self.spool.inbox / name, _DIR)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if name not in self._refused:
                self._refused.add(name)
                log.error(
                    "preset.refused",
                    preset=name,
                    folder=str(self.spool.inbox / name),
                    reason=f"not a folder of the spool ({exc.strerror}): a preset folder "
                    "that is a symbolic link is not followed; nothing in it is taken",
                )
        else:
            self._refused.discard(name)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _take(self, preset: str, folder: int, name: str) -> int:
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError:
            return 0
        if not stat.S_ISREG(st.st_mode) or not name.lower().endswith(SCRIPT_SUFFIXES):
            if (f"{preset}/{name}", st.st_ino) not in self._said:
                self._said.add((f"{preset}/{name}", st.st_ino))
                log.warning("preset.ignored", preset=preset, file=name,
                            reason="a preset folder takes .srt, .vtt and .txt files")  # fmt: skip
            return 0
        path = str(self.spool.inbox / preset / name)
        if not self.gate.settled(
            path, st.st_size, st.st_mtime_ns, self.clock(), self.wall()
        ) or being_written(folder, name):
            self._settling += 1  # still being written (by its mtime, or an open writer)
            return 0
        stem = job_stem(name)
        ref = private.private_name(f"{stem}{PurePosixPath(name).suffix.lower()}")
        manifest: dict[str, Any] = {**with_defaults(self.presets[preset]), "script": ref}
        intent = self._intent(ref)
        try:
            write_atomic(intent, json.dumps(manifest, ensure_ascii=False))
        except OSError as exc:  # a full disk: nothing moved, the file waits where it is
            log.warning("preset.not_taken", preset=preset, file=name, error=str(exc))
            return 0
        try:
            self._move(folder, name, ref)
        except OSError as exc:
            intent.unlink(missing_ok=True)
            if exc.errno != errno.ENOENT:  # gone: another daemon of the spool took it
                log.warning("preset.not_taken", preset=preset, file=name, error=str(exc))
            return 0
        target = self._publish(intent, stem)
        if target is None:
            return 0
        log.info("preset.job", preset=preset, file=name, manifest=target.name)
        return 1

    def _intent(self, ref: str) -> Path:
        return self.spool.incoming / f"{INTENT}{PurePosixPath(ref).name}.{writer_tag()}.intent"

    def _move(self, folder: int, name: str, ref: str) -> None:
        (self.spool.inbox / private.FOLDER).mkdir(exist_ok=True)
        refs = private.open_folder(self.spool.inbox)
        try:
            os.rename(name, PurePosixPath(ref).name, src_dir_fd=folder, dst_dir_fd=refs)
        finally:
            os.close(refs)

    def _publish(self, intent: Path, stem: str) -> Path | None:
        """The intent's manifest into the inbox under a name no waiting manifest has (the
        job is named after the file); None when that failed (the intent stays: finished
        by the next collection)."""
        n = 1
        while True:
            target = self.spool.inbox / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
            try:
                os.link(intent, target)
                break
            except FileExistsError:
                n += 1
            except OSError as exc:
                log.warning("preset.not_published", manifest=target.name, error=str(exc))
                self._unpublished = True
                return None
        intent.unlink(missing_ok=True)
        self.gate.hint_complete(str(target))  # whole, made here: a link is no close event
        return target

    def finish_intents(self) -> int:
        """At start: takes a killed daemon left half done — its file moved into refs/ becomes
        its job; an intent whose file never moved is removed (the file is still in its
        folder)."""
        finished = 0
        try:
            intents = [e.name for e in os.scandir(self.spool.incoming) if e.name.startswith(INTENT)]
        except OSError:
            return 0
        for name in intents:
            mine = name.endswith(f".{writer_tag()}.intent")
            if not name.endswith(".intent") or not (mine or orphaned(name)):
                continue  # a live writer's, about to finish it
            intent = self.spool.incoming / name
            ref = name[len(INTENT) :].rsplit(".", 2)[0]
            if not (self.spool.inbox / private.FOLDER / ref).is_file():
                intent.unlink(missing_ok=True)
                continue
            target = self._publish(intent, job_stem(ref.split("-", 1)[-1]))
            if target is not None:
                finished += 1
                log.info("preset.job", file=ref, manifest=target.name, action="finished a take")
        return finished


def being_written(folder: int, name: str) -> bool:
    """The file is open for writing somewhere (a read lease cannot be had), or it cannot be
    opened without following a link. Where leases are not available (another user's
    file without CAP_LEASE, a network filesystem) the mtime rule alone decides."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
        )
    except OSError:
        return True
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        with suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
