"""How long a request would wait in the queue before its audio begins, estimated.

A request someone waits for (`/v1/audio/speech`) is refused with `429` and an honest
`Retry-After` when the work ahead of it would take longer than the request can wait: the
client's own read timeout when it says it (the OpenAI SDK sends `x-stainless-read-timeout`:
a streamed response must begin within it), else `[http] max_wait_s`. Counting jobs
(`max_queue`) says nothing of this: 300 long requests fit the count and time out all the
same.

The work ahead is the job running now (what is left of it) and every queued job that
goes before the request (its priority or higher), each estimated from its text's length
at its engine's pace: seconds per character, measured over the latest finished jobs of
that engine (the spool's ledger). An engine with no finished job yet has no estimate,
and its jobs count as nothing: nothing is refused on a guess. Each queued manifest is
read once (kept by name, size and time of change).
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicedrop.spool import names
from voicedrop.spool.inbox import list_candidates
from voicedrop.spool.jobs import Spool
from voicedrop.spool.state import read_report_json

RECENT = 50  # finished jobs the pace is measured over
SHOWN_RETRY_MAX_S = 120  # past this, OpenAI's SDK does not retry: it is told not to


@dataclass(frozen=True)
class Job:
    """What the estimate needs of a job's manifest."""

    engine: str
    chars: int
    priority: int

    @classmethod
    def of(cls, data: Any) -> Job | None:
        if not isinstance(data, dict):
            return None
        tts = data.get("tts")
        tts = tts if isinstance(tts, dict) else {}
        text = data.get("text")
        priority = data.get("priority", 0)
        return cls(
            str(tts.get("engine", "")),
            len(text) if isinstance(text, str) else 0,
            priority if isinstance(priority, int) else 0,
        )


class Estimate:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._manifests: dict[str, tuple[int, int, Job | None]] = {}
        self._pace: dict[str, float] = {}
        self._paced: tuple[int, int] | None = None  # the ledger as it was when measured
        self._lock = threading.Lock()  # requests ask from the server's worker threads

    def ahead_s(self, priority: int, running: str | None) -> float:
        """Seconds of work before a request of `priority` begins (0: none known)."""
        with self._lock:
            return self._ahead_s(priority, running)

    def _ahead_s(self, priority: int, running: str | None) -> float:
        pace = self.pace()
        if not pace:
            return 0.0
        total = 0.0
        if running is not None:
            job = self._read(self.spool.work / running / names.MANIFEST)
            if job is not None:
                claimed = _mtime(self.spool.work / running)
                done = max(0.0, time.time() - claimed) if claimed else 0.0
                total += max(0.0, pace.get(job.engine, 0.0) * job.chars - done)
        seen = set()
        for item in list_candidates(self.spool.inbox) or []:
            name = item.path.name
            seen.add(name)
            kept = self._manifests.get(name)
            if kept is None or kept[:2] != (item.size, item.mtime_ns):
                kept = (item.size, item.mtime_ns, self._read(item.path))
                self._manifests[name] = kept
            job = kept[2]
            if job is not None and job.priority >= priority:
                total += pace.get(job.engine, 0.0) * job.chars
        for gone in set(self._manifests) - seen:
            del self._manifests[gone]
        return total

    def pace(self) -> dict[str, float]:
        """Seconds per character, per engine, over the latest finished jobs (measured
        again when a job has finished since: the spool's ledger changed)."""
        try:
            st = self.spool.ledger.path.stat()
            mark: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except OSError:
            mark = None
        if mark is not None and mark == self._paced:
            return self._pace
        self._paced = mark
        per: dict[str, list[float]] = {}
        for entry in self.spool.ledger.recent(RECENT):
            if entry.status != "done" or entry.folder != "outbox":
                continue
            report = read_report_json(self.spool.outbox / entry.job_id) or {}
            job = Job.of(report.get("manifest"))
            seconds = (report.get("timings") or {}).get("total_s")
            if job is not None and job.chars and isinstance(seconds, int | float):
                per.setdefault(job.engine, []).append(seconds / job.chars)
        self._pace = {engine: statistics.median(v) for engine, v in per.items()}
        return self._pace

    @staticmethod
    def _read(path: Path) -> Job | None:
        try:
            return Job.of(json.loads(path.read_bytes()))
        except (OSError, ValueError, RecursionError):
            return None


def can_wait_s(header: str | None, configured: float) -> float:
    """What the request can wait: its client's read timeout if it says one, at most the
    configured wait."""
    try:
        told = float(header) if header else math.inf
    except ValueError:
        told = math.inf
    return min(configured, told) if math.isfinite(told) and told > 0 else configured


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
