"""What the queue learns of a manifest before claiming it, without claiming it.

The model keys its engines would use (for affinity: a job whose models are loaded may
go first) and the files it names — its reference recording, its subtitle script — (a
manifest whose files have not arrived yet waits in the inbox). Parsed once per file
version (path, mtime).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicedrop.daemon.spool import InboxFile
from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest, parse_manifest

if TYPE_CHECKING:  # the executor owns the peek; only its settings, spool and runner are read
    from voicedrop.daemon.executor import Executor

CACHED = 256


@dataclass(frozen=True)
class Peeked:
    keys: set[str]
    files: tuple[str, ...]  # inbox-relative paths of the files it names
    manifest: Manifest | None = None  # None: unreadable or invalid


class ManifestPeek:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._seen: dict[tuple[str, int], Peeked] = {}

    def keys(self, item: InboxFile) -> set[str]:
        return self.of(item).keys

    def awaits_reference(self, item: InboxFile, wall_now: float) -> bool:
        """A manifest whose reference recording or script is not there yet is left in the
        inbox, up to reference_wait_s after it was written: a folder copied onto a share
        often lands its .json before its .wav. After that it is taken, and fails naming it."""
        ex = self.executor
        files = self.of(item).files
        if all(os.path.lexists(ex.spool.inbox / f) for f in files):
            return False
        return wall_now - item.mtime_ns / 1e9 < ex.settings.watcher.reference_wait_s

    def of(self, item: InboxFile) -> Peeked:
        """Unreadable or invalid: nothing (it fails with a report when its turn comes)."""
        cache_key = (str(item.path), item.mtime_ns)
        if cache_key not in self._seen:
            ex = self.executor
            peeked = Peeked(set(), ())
            limit = ex.settings.limits
            try:
                if item.size <= limit.max_manifest_bytes:
                    manifest = parse_manifest(
                        item.path.read_bytes(),
                        max_bytes=limit.max_manifest_bytes,
                        max_text_chars=limit.max_text_chars,
                    )
                    named = (manifest.tts.reference_path, manifest.script)
                    files = tuple(f for f in named if f is not None)
                    peeked = Peeked(ex.runner.model_keys(manifest), files, manifest)
            except (OSError, ManifestError):
                pass
            self._seen = {cache_key: peeked, **dict(list(self._seen.items())[-(CACHED - 1) :])}
        return self._seen[cache_key]
