"""What the daemon is doing, told outside: state/status.json, systemd's STATUS= and the
metrics textfile — each a listener of the job events (listeners.py).

Both status outputs follow the same rule: a new job or a new stage is told at once (so
`voicedrop status`, `submit --wait` and `systemctl status` see it), progress within a
stage at most every STATUS_INTERVAL_S (a stream of tiny jobs would otherwise spend more
time reporting than making speech), and what is left before the loop waits (`flush`).
The status file is also rewritten every HEARTBEAT_S, since readiness (`/health`, the HTTP
side's 503) reads its age: by the loop between jobs, and by `Heartbeat`, a thread that
beats while the loop's thread lives, so a long, healthy job keeps the daemon ready (a
stopped or frozen process beats no more). systemd's watchdog is fed from every event and
every loop turn, not from that thread: it restarts a daemon that makes no progress. Writes go
through fsutil.StateWrites: a full or read-only disk is logged once, never fatal.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from voicedrop.daemon.listeners import Listener
from voicedrop.daemon.sdnotify import Notifier
from voicedrop.fsutil import StateWrites
from voicedrop.metrics import Metrics
from voicedrop.report import ErrorInfo, JobReport
from voicedrop.spool.jobs import Spool
from voicedrop.spool.status import DaemonStatus, read_status

log = structlog.get_logger(__name__)
STATUS_INTERVAL_S = 0.25
HEARTBEAT_S = 10.0  # status.json is rewritten at least this often: readiness reads its age


class _Told(Listener):
    """The daemon's state (`state`, `job_id`, `stage`) as the events change it, told by
    `tell()` under the rule above."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.state: dict[str, Any] = {"state": "starting", "job_id": None, "stage": None}
        self.dirty = False
        self.last = float("-inf")

    def started(self, job_id: str, attempt: int) -> None:
        self.change({"state": "running", "job_id": job_id, "stage": None})

    def stage(self, job_id: str, stage: str) -> None:
        self.change({"state": "running", "job_id": job_id, "stage": stage})

    def retrying(self, job_id: str, delay_s: float, error: ErrorInfo) -> None:
        self.change({"state": "idle", "job_id": None, "stage": None})

    def paused(self, job_id: str, where: str) -> None:
        self.change({"state": "idle", "job_id": None, "stage": None})

    def finished(self, report: JobReport) -> None:
        self.change({"state": "idle", "job_id": None, "stage": None})

    def set_state(self, state: str) -> None:
        """The loop's own states: idle, stopped. Told at once."""
        self.change({"state": state, "job_id": None, "stage": None}, force=True)

    def change(self, update: dict[str, Any], *, force: bool = False) -> None:
        new_job = update.get("job_id") not in (None, self.state.get("job_id"))
        new_stage = _stage_name(update.get("stage")) != _stage_name(self.state.get("stage"))
        force = force or new_job or ("stage" in update and new_stage)
        self.state.update(update)
        self.dirty = True
        if force or self.clock() - self.last >= STATUS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Tell what is pending, if anything."""
        if not self.dirty:
            return
        self.dirty = False
        self.last = self.clock()
        self.tell()

    def tell(self) -> None:
        raise NotImplementedError


class StatusFile(_Told):
    """state/status.json: read by `voicedrop status`, `submit --wait`, the HTTP side."""

    def __init__(
        self,
        path: Path,
        snapshot: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.path = path
        self.snapshot = snapshot  # watcher, device, policy, vram, models, workers
        self.told: DaemonStatus | None = None  # the last status told, written or not
        self._writes = StateWrites("status")
        self._lock = threading.Lock()  # the loop's writes and the heartbeat thread's
        self._written = float("-inf")

    def beat(self) -> None:
        """The heartbeat: rewritten at least every HEARTBEAT_S, even with nothing new."""
        if self.clock() - self.last >= HEARTBEAT_S:
            self.dirty = True
            self.flush()

    def tell(self) -> None:
        status = DaemonStatus(
            **self.state, pid=os.getpid(), updated=datetime.now(UTC), **self.snapshot()
        )
        self._write(status)

    def refresh(self) -> None:
        """The heartbeat thread's: if nothing was written for HEARTBEAT_S, the last status
        told again with the job and stage of now (progress held back included) and the time
        of now. The rest (models, memory) is the loop's to work out; a stopped daemon beats
        no more."""
        with self._lock:
            told, due = self.told, self.clock() - self._written >= HEARTBEAT_S
            if told is None or told.state == "stopped" or not due:
                return
            now = {**self.state, "updated": datetime.now(UTC)}
        self._write(told.model_copy(update=now), unless_newer=told)

    def _write(self, status: DaemonStatus, unless_newer: DaemonStatus | None = None) -> None:
        with self._lock:
            if unless_newer is not None and self.told is not unless_newer:
                return  # the loop told something newer meanwhile
            self._writes.replace(self.path, status.to_json())
            self.told, self._written = status, self.clock()


class Heartbeat:
    """A thread that keeps status.json's age fresh while the loop's thread lives, through
    jobs that tell nothing for minutes (`StatusFile.refresh`)."""

    def __init__(
        self, status: StatusFile, loop: threading.Thread, period_s: float = HEARTBEAT_S / 2
    ) -> None:
        self.status, self.loop, self.period_s = status, loop, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicedrop-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s) and self.loop.is_alive():
            self.status.refresh()


class SystemdStatus(_Told):
    """STATUS= for `systemctl status`, and WATCHDOG=1 while the daemon makes progress."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.notifier = notifier
        self._last_ping = float("-inf")

    def change(self, update: dict[str, Any], *, force: bool = False) -> None:
        super().change(update, force=force)
        self.watchdog()

    def tell(self) -> None:
        job, stage = self.state["job_id"], self.state["stage"]
        detail = f": {job} ({stage})" if job else ""
        self.notifier.notify(status=self.state["state"] + detail)

    def watchdog(self) -> None:
        """Feed systemd's watchdog at half its period: from the loop and from progress."""
        period = self.notifier.watchdog_s
        now = self.clock()
        if period and now - self._last_ping >= period / 2:
            self.notifier.notify(watchdog="1")
            self._last_ping = now


class MetricsTextfile(Listener):
    """The Prometheus text for node_exporter's textfile collector, if configured: at
    most every `interval_s` (after a job, or from the loop), and at stop."""

    def __init__(
        self,
        metrics: Metrics,
        textfile: Path | None,
        interval_s: float,
        spool: Spool,
        status: Callable[[], DaemonStatus | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics, self.textfile, self.interval_s = metrics, textfile, interval_s
        self.spool, self.status, self.clock = spool, status, clock
        self._last = float("-inf")
        self._writes = StateWrites("metrics textfile")

    def finished(self, report: JobReport) -> None:
        self.export()

    def export(self, *, force: bool = False) -> None:
        textfile = self.textfile
        now = self.clock()
        if textfile is None or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        try:
            current = self.status() or read_status(self.spool.state)
            self.metrics.status(current, self.spool.counts())
        except OSError as exc:
            log.warning("metrics.spool_unreadable", error=str(exc))
            return
        self._writes.attempt(textfile, lambda: self.metrics.write_textfile(textfile))


def _stage_name(stage: object) -> str:
    """'tts' of 'tts 3/10' or 'tts: xtts sentence 2/4': a new stage is told at once."""
    return str(stage or "").split(" ")[0].rstrip(":")
