"""Retention: finished jobs removed by age and count, per origin, so an outbox that serves
HTTP clients does not grow forever.

Between jobs, every `[retention] interval_s`, the daemon reads the spool's ledger of
finished jobs (spool/ledger.py) — not a listing of the outbox — and removes, for each
origin, the jobs older than its `max_age_s` and the oldest past its `max_jobs`, in
outbox and failed alike. A job someone is reading (the HTTP side sending its audio) is
left for the next sweep. Drop-folder jobs are kept unless configured otherwise: their
outbox is the user's. The same sweep removes the audio of HTTP speech jobs whose client
went away before it had it (spool/sent.py). A daemon sweeps the whole spool's ledger;
several daemons on one spool sweep the same jobs, which is harmless (a removal is one
rename).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from voicedrop.config import Retention as RetentionSettings
from voicedrop.spool.jobs import Spool
from voicedrop.spool.ledger import Finished, remove
from voicedrop.spool.sent import forget_audio, unheard

log = structlog.get_logger(__name__)


class Retention:
    def __init__(
        self,
        settings: RetentionSettings,
        spool: Spool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.spool, self.clock, self.wall = settings, spool, clock, wall
        self._last = float("-inf")

    def due(self) -> bool:
        return self.clock() - self._last >= self.settings.interval_s

    def sweep(self) -> int:
        """Remove what is due for removal; how many jobs went. OSError: the spool's trouble."""
        self._last = self.clock()
        entries = self.spool.ledger.entries()
        for entry in entries:
            folder = self._folder(entry)
            if entry.origin == "http" and entry.folder == "outbox" and unheard(folder):
                forget_audio(folder)
        doomed = self.doomed(entries, self.wall())
        if not doomed:
            return 0
        done = [(e, remove(self._folder(e), e.mark)) for e in doomed]
        ended = {e.key for e, how in done if how != "held"}
        self.spool.ledger.rewrite([e for e in entries if e.key not in ended])
        removed = sum(how == "removed" for _, how in done)
        if removed:
            held = sum(how == "held" for _, how in done)
            log.info("retention.removed", jobs=removed, held=held)
        return removed

    def doomed(self, entries: list[Finished], now: float) -> list[Finished]:
        """The entries whose jobs go now (entries oldest first)."""
        out = []
        for origin, keep in (("http", self.settings.http), ("drop", self.settings.drop)):
            mine = [e for e in entries if e.origin == origin]
            too_many = len(mine) - keep.max_jobs if keep.max_jobs is not None else 0
            for i, e in enumerate(mine):
                old = keep.max_age_s is not None and now - e.finished >= keep.max_age_s
                if old or i < too_many:
                    out.append(e)
        return out

    def _folder(self, entry: Finished) -> Path:
        base = self.spool.outbox if entry.folder == "outbox" else self.spool.failed
        return base / entry.job_id
