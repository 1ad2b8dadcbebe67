"""The daemon's lifecycle: build the parts once, watch, loop, stop cleanly.

One residency manager per device is created here and passed down. Signal
handlers are installed by the entry point (cli) and only set `stop`; the
current job always finishes. systemd hears READY=1 after the first scan,
STATUS= with the current job, WATCHDOG=1 from the loop and STOPPING=1.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

import voicedrop
from voicedrop.config import Settings
from voicedrop.daemon.cluster import ClusterExecutor
from voicedrop.daemon.executor import Executor
from voicedrop.daemon.heap import Heap
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.lock import DaemonLock
from voicedrop.daemon.peek import ManifestPeek
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.sdnotify import Notifier
from voicedrop.daemon.wakeup import Wakeup
from voicedrop.daemon.watcher import StabilityGate, Watcher
from voicedrop.errors import ConfigError
from voicedrop.fsutil import StateWrites
from voicedrop.metrics import Metrics
from voicedrop.pipeline.device import CPUDevice, Device
from voicedrop.pipeline.device_choice import make_device
from voicedrop.pipeline.engines import Engines, build_engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobRunner
from voicedrop.report import JobReport, VramStats
from voicedrop.spool.jobs import Spool
from voicedrop.spool.status import DaemonStatus, read_status, status_path

log = structlog.get_logger(__name__)
LOCK_FILE = ".voicedrop.lock"  # in the state directory: one daemon per state directory
STATUS_INTERVAL_S = 0.25
HEARTBEAT_S = 10.0  # status.json is rewritten at least this often: readiness reads its age


def build_manager(settings: Settings, device: Device) -> ResidencyManager:
    return ResidencyManager.from_settings(settings, device)


def scheduler_for(settings: Settings) -> Scheduler:
    s = settings.scheduler
    return Scheduler(affinity=s.affinity, max_skips=s.max_skips, max_wait_s=s.max_wait_s)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        device: Device | None = None,
        engines: Engines | None = None,
        notifier: Notifier | None = None,
        load: Callable[[], Settings] | None = None,
        metrics: Metrics | None = None,
        inbox: InboxIndex | None = None,
    ) -> None:
        self.settings = settings
        self.load = load  # how SIGHUP re-reads the configuration; None: reload unsupported
        self.reload_requested = False  # set by the SIGHUP handler (signal-safe)
        self.spool = Spool.from_settings(settings)
        self.inbox = inbox or InboxIndex(self.spool.inbox)
        cluster = settings.ray.address is not None
        # a cluster's head holds no model: its workers have the GPUs
        self.device = device or (CPUDevice() if cluster else make_device(settings.device))
        self.manager = build_manager(settings, self.device)
        self.notifier = notifier or Notifier()
        self.gate = StabilityGate(settings.watcher.stable_delay_s)
        self.wake = Wakeup()
        self.engines = engines or build_engines(settings)
        self.runner = JobRunner(settings, self.engines, self.manager)
        self.executor = (ClusterExecutor if cluster else Executor)(
            settings,
            self.spool,
            self.runner,
            scheduler_for(settings),
            self.gate,
            self.inbox,
            observer=self,
        )
        self.metrics = metrics or Metrics()
        self.watcher = Watcher(self.inbox, settings.watcher, self.gate, self.wake)
        self.heap = Heap()
        self._ran_since_trim = False
        self._status_writes = StateWrites("status")
        self._metrics_writes = StateWrites("metrics textfile")
        self._status: dict[str, Any] = {"state": "starting", "job_id": None, "stage": None}
        self._last_ping = 0.0
        self._last_write = 0.0
        self._last_export = 0.0
        self._dirty = False

    def run(self, stop: threading.Event, *, once: bool = False) -> int:
        """Serve until `stop`; AlreadyRunningError if another daemon has this state directory."""
        try:
            self.spool.ensure()
        except OSError as exc:
            raise ConfigError(f"the spool {self.spool.root} cannot be prepared: {exc}") from None
        with DaemonLock(self.spool.state / LOCK_FILE):
            try:
                self._start_cluster()
                self._serve(stop, once)
            finally:
                if isinstance(self.executor, ClusterExecutor) and self.executor.pool:
                    self.executor.pool.close()
                self.manager.close()
        log.info("service.stop")
        return 0

    def _start_cluster(self) -> None:
        """With `ray.address`: connect to the cluster and start one worker actor per GPU
        (Ray is imported only here)."""
        if isinstance(self.executor, ClusterExecutor):
            from voicedrop.cluster.pool import Pool

            self.executor.pool = Pool(self.settings)
            self.executor.pool.start()

    def _serve(self, stop: threading.Event, once: bool) -> None:
        log.info(
            "service.start",
            version=voicedrop.__version__,
            spool=str(self.settings.spool),
            device=self.device.name,
            policy=self.settings.policy,
            once=once,
        )
        with self.watcher:
            self.executor.start()
            ready = self.executor.scan()  # READY=1 comes after the first scan
            self.publish({"state": "idle"}, force=True)
            self.notifier.notify(
                ready="1", status=f"watching {self.spool.inbox}: {ready} job(s) ready"
            )
            self.executor.run(
                stop,
                self.wake,
                once=once,
                tick=self._between_jobs,
                idle=self._idle,
                max_wait_s=self._max_wait(),
            )
            self.notifier.notify(stopping="1", status="stopping")
            self.publish({"state": "stopped", "job_id": None, "stage": None}, force=True)
            self._export(force=True)

    def _between_jobs(self) -> None:
        self.watcher.check()  # between jobs only: nothing is claimed during one anyway
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        if self.manager.expire():  # keep-alive: idle models leave the GPU
            self._dirty = True
        self._tick()

    def reload(self) -> None:
        """Apply a re-read configuration between jobs (SIGHUP, systemctl reload).

        Engines, voices, models, limits, scheduling and the residency policy change; the
        models of the old configuration leave memory. A configuration that is invalid,
        or that moves the spool, the state directory, the device or the watcher, is
        refused with a log line and the daemon goes on as it was.
        """
        if self.load is None:
            log.warning("service.reload_unsupported")
            return
        if isinstance(self.executor, ClusterExecutor):  # the workers hold the old settings
            log.error("service.reload_refused", error="restart to reconfigure cluster workers")
            self.notifier.notify(status="reload refused: restart to reconfigure the cluster")
            return
        try:
            settings = self.load()
            fixed = ("spool", "state_path", "device", "watcher")
            moved = [k for k in fixed if getattr(settings, k) != getattr(self.settings, k)]
            if moved:
                raise ConfigError(f"{', '.join(moved)} cannot change on reload: restart instead")
            engines = build_engines(settings)
        except ConfigError as exc:
            log.error("service.reload_refused", error=exc.message)
            self.notifier.notify(status=f"reload refused: {exc.message.splitlines()[-1]}")
            return
        self.manager.close()
        self.settings, self.engines = settings, engines
        self.manager = build_manager(settings, self.device)
        self.runner = JobRunner(settings, engines, self.manager)
        self.executor.settings, self.executor.runner = settings, self.runner
        self.executor.peek = ManifestPeek(self.executor)  # keys under the new engines
        self.executor.scheduler = scheduler_for(settings)
        log.info("service.reloaded", policy=settings.policy)
        self.publish({"state": "idle"}, force=True)

    def _max_wait(self) -> float:
        """How long the loop may wait: the heartbeat, or half systemd's watchdog period."""
        watchdog = self.notifier.watchdog_s
        return min(HEARTBEAT_S, watchdog / 2) if watchdog else HEARTBEAT_S

    # ---- the executor's observer ------------------------------------------------------------

    def status(self, change: dict[str, Any]) -> None:
        self.publish(change)

    def finished(self, report: JobReport) -> None:
        self.metrics.observe(report)
        self._ran_since_trim = True
        self.heap.after_job()

    def _idle(self) -> None:
        """Nothing to run: write what is pending, and give freed memory back (heap.py)."""
        self.flush()
        self.heap.idle(self._ran_since_trim)
        self._ran_since_trim = False

    def _tick(self) -> None:
        """On every loop turn and every progress report: feed the systemd watchdog, beat."""
        now = time.monotonic()
        if now - self._last_write >= HEARTBEAT_S:
            self._dirty = True
            self.flush()
        interval = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else None
        if interval and now - self._last_ping >= interval:
            self.notifier.notify(watchdog="1")
            self._last_ping = now

    def publish(self, change: dict[str, Any], *, force: bool = False) -> None:
        """Record a state change; write it at once when a job starts, else at most
        every STATUS_INTERVAL_S.

        Progress within a job is throttled because a stream of tiny jobs would
        otherwise spend more time reporting than making speech; `flush()` writes
        what is left (e.g. 'idle') before the loop waits.
        """
        new_job = change.get("job_id") not in (None, self._status.get("job_id"))
        new_stage = _stage_name(change.get("stage")) != _stage_name(self._status.get("stage"))
        force = force or new_job or ("stage" in change and new_stage)
        self._status.update(change)
        self._dirty = True
        self._tick()
        if force or time.monotonic() - self._last_write >= STATUS_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write state/status.json for `voicedrop status`, and STATUS= for systemctl."""
        if not self._dirty:
            return
        self._dirty = False
        self._last_write = time.monotonic()
        status = DaemonStatus(
            **self._status,
            pid=os.getpid(),
            updated=datetime.now(UTC),
            watcher=self.watcher.mode,
            device=self.device.name,
            policy=self.settings.policy,
            vram=VramStats.model_validate(self.manager.get_vram_usage()),
            models=self.manager.models(),
            workers=self.executor.workers(),
        )
        self._status_writes.replace(status_path(self.spool.state), status.to_json())
        job, stage = status.job_id, status.stage
        self.notifier.notify(status=status.state + (f": {job} ({stage})" if job else ""))
        self._export(status)

    def _export(self, status: DaemonStatus | None = None, *, force: bool = False) -> None:
        """Write the metrics for node_exporter's textfile collector, if configured: at most
        every `metrics.interval_s`, and at stop. A failure is logged, never fatal."""
        textfile = self.settings.metrics.textfile
        now = time.monotonic()
        if textfile is None or (
            not force and now - self._last_export < self.settings.metrics.interval_s
        ):
            return
        self._last_export = now
        try:
            current = status or read_status(self.spool.state)
            self.metrics.status(current, self.spool.counts())
        except OSError as exc:
            log.warning("metrics.spool_unreadable", error=str(exc))
            return
        self._metrics_writes.attempt(textfile, lambda: self.metrics.write_textfile(textfile))


def _stage_name(stage: object) -> str:
    """'tts' of 'tts 3/10' or 'tts: xtts sentence 2/4': a new stage is written at once."""
    return str(stage or "").split(" ")[0].rstrip(":")
