"""Hot folders: a subtitle file or plain text saved into `inbox/<preset>/` becomes a job,
with no JSON written by anyone.

`[presets.<name>]` in the configuration is the rest of a manifest — engine, voice,
conversion, output, lexicon, priority — checked at start-up like a manifest. An editing
suite's watch folder, or a person, saves `episode.srt`, `episode.vtt` or `chapter.txt`
(paragraphs become clips) into `inbox/<name>/`; once the file is complete by the inbox's
own rule (closed after writing or renamed in, or unchanged for `stable_delay_s`), the
daemon moves it beside the inbox's other named files (`inbox/refs/`) and drops a
manifest naming it into the inbox, which then runs like any other. A file of another
kind in a preset folder is named once in the log and left alone.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from voicedrop.config import Settings
from voicedrop.daemon.watcher import TEMPORARY, StabilityGate
from voicedrop.errors import ManifestError
from voicedrop.fsutil import write_atomic
from voicedrop.manifest import SAFE_NAME, SCRIPT_SUFFIXES, parse_manifest
from voicedrop.spool.claimed import job_stem
from voicedrop.spool.jobs import SUBMIT_REFS, Spool

log = structlog.get_logger(__name__)
RESERVED = {SUBMIT_REFS.rstrip("/"), ".incoming"}


def check_presets(settings: Settings) -> None:
    """Each preset is the rest of a manifest: a bad one stops start-up (ConfigError)."""
    for name, preset in settings.presets.items():
        key = f"presets.{name}"
        if not re.match(SAFE_NAME, name) or name in RESERVED:
            raise settings.invalid(key, name, "a folder name: letters, digits, '.', '_', '-'")
        given = sorted(set(preset) & {"text", "segments", "script", "id"})
        if given:
            raise settings.invalid(key, preset, f"{given[0]} comes from the file dropped in")
        raw = json.dumps({**preset, "text": "check"}).encode()
        try:
            parse_manifest(raw, max_bytes=len(raw), max_text_chars=len(raw))
        except ManifestError as exc:  # the manifest's own words: field and reason
            raise settings.invalid(key, preset, exc.message) from None


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

    @property
    def folders(self) -> list[Path]:
        return [self.spool.inbox / name for name in self.presets]

    def ensure(self) -> None:
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)

    def collect(self) -> int:
        """Turn the complete files of the preset folders into jobs; how many."""
        made = 0
        for name in self.presets:
            try:
                entries = list(os.scandir(self.spool.inbox / name))
            except FileNotFoundError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith(".") or entry.name.endswith(TEMPORARY):
                    continue
                made += self._take(name, entry)
        return made

    def _take(self, preset: str, entry: os.DirEntry[str]) -> int:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return 0
        if not entry.is_file(follow_symlinks=False) or not entry.name.lower().endswith(
            SCRIPT_SUFFIXES
        ):
            if (entry.path, st.st_ino) not in self._said:
                self._said.add((entry.path, st.st_ino))
                log.warning("preset.ignored", preset=preset, file=entry.name,
                            reason="a preset folder takes .srt, .vtt and .txt files")  # fmt: skip
            return 0
        if not self.gate.settled(entry.path, st.st_size, st.st_mtime_ns, self.clock(), self.wall()):
            return 0  # still being written
        stem = job_stem(entry.name)
        ref = f"{SUBMIT_REFS}{uuid.uuid4().hex[:8]}-{stem}{Path(entry.name).suffix.lower()}"
        manifest: dict[str, Any] = {**self.presets[preset], "script": ref}
        target = self._free_name(stem)
        try:
            (self.spool.inbox / SUBMIT_REFS).mkdir(exist_ok=True)
            os.rename(entry.path, self.spool.inbox / ref)
            write_atomic(target, json.dumps(manifest, ensure_ascii=False))
        except OSError as exc:
            log.warning("preset.not_taken", preset=preset, file=entry.name, error=str(exc))
            return 0
        log.info("preset.job", preset=preset, file=entry.name, manifest=target.name)
        return 1

    def _free_name(self, stem: str) -> Path:
        """An inbox name no waiting manifest has: the job is named after the file."""
        candidate, n = self.spool.inbox / f"{stem}.json", 1
        while candidate.exists():
            n += 1
            candidate = self.spool.inbox / f"{stem}-{n}.json"
        return candidate
