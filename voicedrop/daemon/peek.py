"""What the queue learns of a manifest before claiming it, without claiming it.

The model keys its engines would use (for affinity: a job whose models are loaded may
go first), its priority, and the files it names — its reference recording, its subtitle script — (a
manifest whose files have not arrived yet waits in the inbox). Parsed once per file
version (path, mtime).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import structlog

from voicedrop.config import Settings
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.errors import EngineUnavailableError, ManifestError
from voicedrop.intake import read_manifest
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.plan import Planner
from voicedrop.spool.claimed import display_name
from voicedrop.spool.inbox import InboxFile

log = structlog.get_logger(__name__)
CACHED = 4096  # waiting manifests whose plan is kept (a few hundred bytes each)


@dataclass(frozen=True)
class Peeked:
    keys: set[str]
    files: tuple[str, ...]  # inbox-relative paths of the files it names
    first: tuple[ModelSpec, ...] = ()  # its first stage's models (from its plan): prefetch
    priority: int = 0


class ManifestPeek:
    """One configuration's view: a reload makes a new peek (keys under the new engines)."""

    def __init__(
        self, settings: Settings, inbox: Path, gate: StabilityGate, planner: Planner
    ) -> None:
        self.settings = settings
        self.inbox = inbox
        self.gate = gate
        self.planner = planner
        self._seen: OrderedDict[tuple[str, int], Peeked] = OrderedDict()  # least recent first

    def keys(self, item: InboxFile) -> set[str]:
        return self.of(item).keys

    def priority(self, item: InboxFile) -> int:
        return self.of(item).priority

    def awaits_files(self, item: InboxFile, now: float, wall_now: float) -> bool:
        """A manifest whose reference recording or script is not there yet, or not
        complete yet by the manifest's own rule (closed after writing or renamed in, or
        unchanged for `stable_delay_s`), is left in the inbox, up to reference_wait_s
        after it was written: a folder copied onto a share often lands its .json before
        its .wav. After that it is taken, and fails naming what is missing."""
        files = self.of(item).files
        if not files or wall_now - item.mtime_ns / 1e9 >= self.settings.watcher.reference_wait_s:
            return False
        for name in files:
            path = self.inbox / name
            try:
                st = os.lstat(path)
            except (OSError, ValueError):
                return True  # not there yet (or never: the attempt will say so)
            if not self.gate.settled(str(path), st.st_size, st.st_mtime_ns, now, wall_now):
                return True
        return False

    def of(self, item: InboxFile) -> Peeked:
        """Unreadable or invalid: nothing (it fails with a report when its turn comes)."""
        cache_key = (str(item.path), item.mtime_ns)
        if cache_key in self._seen:
            self._seen.move_to_end(cache_key)  # used: the last to be forgotten
        else:
            peeked = Peeked(set(), ())
            try:
                manifest = read_manifest(item.path, self.settings.limits)
                named = (manifest.tts.reference_path, manifest.script)
                files = tuple(f for f in named if f is not None)
                peeked = Peeked(set(), files, priority=manifest.priority)
                ref = manifest.tts.reference_path
                plan = self.planner.plan(manifest, Path(ref) if ref else None)
                peeked = Peeked(plan.keys, files, tuple(plan.first), manifest.priority)
            except (ManifestError, EngineUnavailableError):
                pass  # it fails with a report when its turn comes
            except Exception:  # input no check foresaw: the same, and the log says so
                log.exception("intake.peek_failed", file=display_name(item.path.name))
            self._seen[cache_key] = peeked
            while len(self._seen) > CACHED:  # the least recently used goes
                self._seen.popitem(last=False)
        return self._seen[cache_key]
