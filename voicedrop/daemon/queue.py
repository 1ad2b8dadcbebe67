"""The queue: which job runs next, and the one after it.

In order: jobs recovered from work/ (a daemon died with them), then transient failures
whose retry is due, then a job that stepped aside between its segments for a job of a
higher priority (once none is ready), then the inbox — the files the stability gate
calls complete whose named files (reference, script) have arrived, by priority and
arrival, bent by the scheduler's affinity for jobs whose models are already in memory.
Claiming is the spool's (an atomic rename); an entry that cannot be claimed is said once
and left alone until it changes. While the spool is in trouble nothing is claimed
(retries.SpoolBackoff).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import structlog

from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.peek import CACHED, ManifestPeek
from voicedrop.daemon.retries import SpoolBackoff
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.spool.claimed import ClaimedJob, Unclaimable, display_name
from voicedrop.spool.inbox import InboxFile
from voicedrop.spool.jobs import Spool

log = structlog.get_logger(__name__)
AFFINITY_WINDOW = 16
LOOKAHEAD = CACHED // 2  # ready files whose named files are checked per scan


@dataclass(frozen=True)
class PausedJob:
    job: ClaimedJob
    priority: int
    since: float  # when it first stepped aside


@dataclass
class JobQueue:
    spool: Spool
    gate: StabilityGate
    inbox: InboxIndex
    scheduler: Scheduler
    peek: ManifestPeek
    in_memory: Callable[[], set[str]]  # the model keys a job could start with, no disk load
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    backoff: SpoolBackoff = field(default_factory=SpoolBackoff)
    rescan: bool = True  # the inbox changed, or a scan is due: look before picking
    _recovered: list[ClaimedJob] = field(default_factory=list)
    _deferred: list[tuple[float, ClaimedJob]] = field(default_factory=list)  # by due time
    _ready: list[InboxFile] = field(default_factory=list)
    _unclaimable: dict[str, tuple[int, int]] = field(default_factory=dict)  # said once
    _passed: dict[str, int] = field(default_factory=dict)  # job id -> jobs that went ahead
    _paused: list[PausedJob] = field(default_factory=list)  # stepped aside, oldest first

    def reconfigure(self, scheduler: Scheduler, peek: ManifestPeek) -> None:
        """A reload: the new scheduling bounds, and a peek that plans under the new engines."""
        self.scheduler, self.peek = scheduler, peek

    def start(self) -> None:
        """Take back what a previous daemon left in work/."""
        try:
            self.spool.ensure()
            self._recovered = self.spool.recover()
        except OSError as exc:  # a full disk, a share away: recovery is tried again later
            self.backoff.failed(exc)
            return
        if self._recovered:
            log.info("executor.recovered", jobs=[j.job_id for j in self._recovered])

    def adopt(self) -> None:
        """Take over the jobs of a daemon of this spool that died (their leases are free),
        as a restarted daemon would; jobs a live daemon owns are never touched."""
        mine = {job.job_id for _, job in self._deferred} | {j.job_id for j in self._recovered}
        found = [j for j in self.spool.recover() if j.job_id not in mine]
        if found:
            log.info("executor.adopted", jobs=[j.job_id for j in found])
            self._recovered += found

    def _requeue(self) -> None:
        """After a spool error: finish the commits that failed, pick up whatever is left
        in work/ (it is retried, counted); jobs waiting for a transient retry keep their
        schedule. While a commit still fails, try again later."""
        waiting = {job.job_id for _, job in self._deferred}
        try:
            restored = self.spool.restore()
            if restored:
                log.warning("spool.folders_restored", folders=restored)
            self._recovered = [j for j in self.spool.recover() if j.job_id not in waiting]
            stuck = self.spool.uncommitted()
        except OSError as exc:
            self.backoff.failed(exc)
            return
        if stuck:
            self.backoff.failed(OSError(f"{len(stuck)} finished job(s) not yet published: {stuck}"))
            return
        self.backoff.recovered()

    # ---- what runs next ---------------------------------------------------------------

    def next(
        self,
        resident: set[str] | None = None,
        elsewhere: AbstractSet[str] = frozenset(),
    ) -> ClaimedJob | None:
        """The next job to run, claimed: recovered, then due retries, then the
        scheduler's pick (affinity to `resident`, by default the models this daemon
        holds in memory; `elsewhere`: what other cluster workers hold)."""
        if self.backoff.due is not None:
            if self.backoff.waiting():
                return None  # the spool is in trouble: claim nothing until it is retried
            self._requeue()
            if self.backoff.due is not None:
                return None
        if self._recovered:
            return self._recovered.pop(0)
        if self._deferred and self._deferred[0][0] <= self.clock():
            return self._deferred.pop(0)[1]
        if self._paused and not self.urgent(self._paused[0].priority, self._paused[0].since):
            return self._paused.pop(0).job
        while True:
            if not self._ready or self.rescan:
                self.scan()
            if not self._ready:
                return None
            held = self.in_memory() if resident is None else resident
            item = self.scheduler.pick(
                self._ready[:AFFINITY_WINDOW],
                _name,
                self.peek.keys,
                held,
                elsewhere,
                self.peek.priority,
            )
            assert item is not None
            self._ready.remove(item)
            try:
                job = self.spool.claim(item)
            except Unclaimable as exc:
                self._cannot_claim(exc)
                continue
            finally:
                self.inbox.changed(item.path.name)  # gone now, or changed: look again
            if job is not None:
                self._passed[job.job_id] = self.scheduler.passed_by
                return job

    def upcoming(self) -> tuple[ModelSpec, ...]:
        """The first models of the job likely to run after this one (what the scheduler
        would pick now), from its plan, for prefetch; none when a recovered or retried
        job comes first, or nothing waits."""
        if self._recovered or (self._deferred and self._deferred[0][0] <= self.clock()):
            return ()
        item = self.scheduler.preview(
            self._ready[:AFFINITY_WINDOW],
            _name,
            self.peek.keys,
            self.in_memory(),
            self.peek.priority,
        )
        return () if item is None else self.peek.of(item).first

    def urgent(self, priority: int, since: float | None = None) -> bool:
        """A job of a higher priority than `priority` is ready in the inbox: a job that
        runs (or stepped aside at `since`) lets it go first — but no longer than
        `scheduler.max_wait_s` in all, so nothing starves. Asked between a running job's
        segments: it looks at the inbox's index, which the watcher keeps current."""
        if since is not None and self.clock() - since >= self.scheduler.max_wait_s:
            return False
        self.scan()
        return any(self.peek.priority(item) > priority for item in self._ready)

    def pause(self, job: ClaimedJob, priority: int, since: float | None) -> None:
        """A job stepped aside between its segments: it comes back as soon as nothing of
        a higher priority is ready (`since`: when it first stepped aside, for the bound)."""
        when = self.clock() if since is None else since
        self._paused.append(PausedJob(job, priority, when))

    def paused_since(self, job_id: str) -> float | None:
        return next((p.since for p in self._paused if p.job.job_id == job_id), None)

    def scan(self) -> int:
        """Look at the inbox (its index: a listing only when one is due) and note which
        files are complete, with every file they name; return how many are."""
        self.rescan = False
        listing = [f for f in self.inbox.files() if self._claimable(f)]
        now, wall = self.clock(), self.wall()
        ready = self.gate.ready(listing, now, wall)
        # the queue looks ahead as far as the peek remembers: a deep queue is read in
        # turns, never re-read in full on every scan
        self._ready = [f for f in ready[:LOOKAHEAD] if not self.peek.awaits_files(f, now, wall)]
        return len(ready)

    # ---- what comes back ----------------------------------------------------------------

    def defer(self, job: ClaimedJob, delay_s: float) -> None:
        """A job to run again after `delay_s` (its transient failure's retry)."""
        self._deferred.append((self.clock() + delay_s, job))
        self._deferred.sort(key=lambda item: item[0])

    def passed_by(self, job_id: str) -> int:
        """How many later jobs the scheduler let go ahead of this one."""
        return self._passed.get(job_id, 0)

    def committed(self, job_id: str) -> None:
        """A job ended for good: the spool works again, if it was in trouble."""
        self._passed.pop(job_id, None)
        self.backoff.job_through()

    def waiting(self) -> bool:
        """Something will come without a new file: a file settling, a retry, a recovery."""
        return bool(
            self.gate.waiting() or self._deferred or self._paused or self.backoff.due is not None
        )

    def due(self) -> float | None:
        """The earliest moment the queue has something to do without being woken."""
        times = [self.backoff.due, self._deferred[0][0] if self._deferred else None]
        return min((t for t in times if t is not None), default=None)

    # ---- entries that cannot be claimed -----------------------------------------------

    def _cannot_claim(self, exc: Unclaimable) -> None:
        """Say once (per version of the file) that an inbox entry cannot be taken; the
        queue goes on without it until it changes."""
        item = exc.item
        self._unclaimable[str(item.path)] = (item.size, item.mtime_ns)
        log.error(
            "inbox.unclaimable",
            file=display_name(item.path.name),
            reason=exc.reason,
            action="left in the inbox; move or fix it (it is tried again when it changes)",
        )

    def _claimable(self, item: InboxFile) -> bool:
        said = self._unclaimable.get(str(item.path))
        if said is None:
            return True
        if said == (item.size, item.mtime_ns):
            return False
        del self._unclaimable[str(item.path)]  # changed: try again
        return True


def _name(item: InboxFile) -> str:
    return item.path.name
