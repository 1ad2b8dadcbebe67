"""Private inputs nothing names any more, found when a daemon starts.

A file under `inbox/refs/` belongs to one job (spool/private.py). One that no waiting
manifest, claimed job or hot-folder take names — a `submit` killed between staging its
script and dropping its manifest, or a hot-folder file an older version moved and then
lost on a full disk — would sit there for ever, unseen. Each becomes a failed job that
keeps the file in its `inputs/` and says what happened, so it is found where every other
job that did not run is found, and can be dropped again.
"""

from __future__ import annotations

import time

import structlog

from voicedrop.config import Settings
from voicedrop.report import VramStats, unrun_report
from voicedrop.spool import private
from voicedrop.spool.jobs import Spool

log = structlog.get_logger(__name__)


def fail_orphans(spool: Spool, settings: Settings, vram: VramStats) -> list[str]:
    """The job ids of the failed jobs made, one per orphan older than reference_wait_s."""
    before = time.time() - settings.watcher.reference_wait_s
    limit = settings.limits.max_manifest_bytes
    made = []
    for name in private.orphans(spool.inbox, spool.work, before, limit):

        def report(job_id: str, name: str = name) -> str:
            source = f"{private.PREFIX}{name}"
            why = (
                f"'{source}' was staged for a job whose manifest never arrived (its producer "
                "stopped part-way); the file is kept in this job's inputs/: drop it again"
            )
            return unrun_report(job_id, source, "orphaned_input", why, vram).to_json()

        final = spool.fail_orphan(name, report)
        if final is not None:
            made.append(final.name)
            log.warning("spool.orphan_failed", file=f"{private.PREFIX}{name}", job_id=final.name)
    return made
