"""The daemon's lifecycle: build the parts, start them, loop, close them in `finally`.

`Service` is a context manager: entering it prepares the spool, takes the state
directory's lock and starts the dispatch (a cluster connects to its workers); leaving it
closes the dispatch and drops every model, whatever happened. One residency manager per
device is created here and passed down. What happens to jobs reaches the status file,
systemd, the metrics and the heap trimmer as events (listeners.py). Signal handlers are
installed by the entry point (cli) and only set `stop`; the current job always finishes.
systemd hears READY=1 after the first scan, STATUS= with the current job, WATCHDOG=1
from the loop and STOPPING=1.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

import structlog

import voicedrop
from voicedrop.config import Settings
from voicedrop.daemon import status_file as status
from voicedrop.daemon.attempt import Attempts
from voicedrop.daemon.cluster import Cluster
from voicedrop.daemon.control import Controls, check_preload
from voicedrop.daemon.executor import Dispatch, Executor, Inline
from voicedrop.daemon.heap import Heap
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.listeners import Listeners, Prometheus
from voicedrop.daemon.lock import DaemonLock
from voicedrop.daemon.on_worker import OnWorker
from voicedrop.daemon.orphans import fail_orphans
from voicedrop.daemon.peek import ManifestPeek
from voicedrop.daemon.presets import Presets, check_presets
from voicedrop.daemon.process import DeviceWorker, worker_vram
from voicedrop.daemon.queue import JobQueue
from voicedrop.daemon.retention import Retention
from voicedrop.daemon.retries import RetryPolicy, SpoolBackoff
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.sdnotify import Notifier
from voicedrop.daemon.sections import check_reloadable
from voicedrop.daemon.wakeup import Wakeup
from voicedrop.daemon.watcher import StabilityGate, Watcher
from voicedrop.daemon.webhook import Webhook
from voicedrop.errors import ConfigError
from voicedrop.fsutil import remove_orphan_temps
from voicedrop.metrics import Metrics
from voicedrop.pipeline.audio import warm as warm_post_stage
from voicedrop.pipeline.device import CPUDevice, Device
from voicedrop.pipeline.device_choice import make_device
from voicedrop.pipeline.engines import Engines, build_engines
from voicedrop.pipeline.plan import Planner
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobRunner
from voicedrop.spool.control import control_folder
from voicedrop.spool.jobs import Spool
from voicedrop.spool.status import status_path
from voicedrop.warmup import POST_STAGE, Warmup

log = structlog.get_logger(__name__)
LOCK_FILE = ".voicedrop.lock"  # in the state directory: one daemon per state directory


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
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.load = load  # how SIGHUP re-reads the configuration; None: reload unsupported
        self.reload_requested = False  # set by the SIGHUP handler (signal-safe)
        self.spool = Spool.from_settings(settings)
        self.inbox = inbox or InboxIndex(self.spool.inbox)
        cluster = settings.ray.address is not None
        on_worker = not cluster and settings.residency.worker == "process"
        # a cluster's head, and a daemon with a device worker, hold no model: their workers
        # have the device (no device context is ever made here)
        if device is not None and on_worker:
            raise ValueError("a device handed to the service needs [residency] worker = 'inline'")
        self.device = device or (
            CPUDevice() if cluster or on_worker else make_device(settings.device)
        )
        self.manager = ResidencyManager.from_settings(settings, self.device)
        self.notifier = notifier or Notifier()
        self.gate = StabilityGate(settings.watcher.stable_delay_s)
        self.wake = Wakeup()
        self.engines = engines or build_engines(settings)
        self.runner = JobRunner(settings, self.engines, self.manager)
        check_preload(settings, self.runner.planner)
        check_presets(settings, self.runner.planner)
        self.presets = Presets(settings, self.spool, self.gate, clock, wall)
        self.controls = Controls(self.spool.state)
        self.queue = JobQueue(
            self.spool,
            self.gate,
            self.inbox,
            scheduler_for(settings),
            self._peek(settings),
            self._in_memory,
            clock,
            wall,
            SpoolBackoff(clock),
        )
        self.metrics = metrics or Metrics()
        self.watcher = Watcher(
            self.inbox,
            settings.watcher,
            self.gate,
            self.wake,
            control_folder(self.spool.state),
            self.presets.folders,
        )
        self.heap = Heap()
        self.retention = Retention(settings.retention, self.spool, clock, wall)
        self.status_file = status.StatusFile(status_path(self.spool.state), self._snapshot, clock)
        self.systemd = status.SystemdStatus(self.notifier, clock)
        self.textfile = status.MetricsTextfile(
            self.metrics,
            settings.metrics.textfile,
            settings.metrics.interval_s,
            self.spool,
            lambda: self.status_file.told,
            clock,
        )
        self.webhook = Webhook(settings.notify, self.spool.state)
        self.events = Listeners(
            [
                self.status_file,
                self.systemd,
                Prometheus(self.metrics),
                self.textfile,
                self.heap,
                self.webhook,
            ]
        )
        limits = settings.limits
        self.attempts = Attempts(
            limits, self.spool, self.runner, self.queue, RetryPolicy(limits), self.events, clock
        )
        self.worker = DeviceWorker(settings, clock) if on_worker else None
        self.dispatch: Dispatch = (
            Cluster(settings, self.queue, self.attempts)
            if cluster
            else OnWorker(self.queue, self.attempts, self.worker, self.wake.set)
            if self.worker is not None
            else Inline(self.queue, self.attempts)
        )
        self.executor = Executor(
            self.queue,
            self.attempts,
            self.dispatch,
            self.inbox,
            settings.watcher.scan_interval_s,
            clock,
        )
        self._lock: DaemonLock | None = None
        self.warmup: Warmup | None = None  # serve() starts it

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Service:
        """Prepare the spool, take the state directory (AlreadyRunningError if another
        daemon has it) and start the dispatch; on any failure, what was started closes."""
        try:
            self.spool.ensure()
            self.spool.ledger.ensure(self.spool.outbox, self.spool.failed)
            self.presets.ensure()
        except PermissionError as exc:
            where, root = exc.filename or self.spool.root, self.spool.root
            uid, gid = os.getuid(), os.getgid()
            raise ConfigError(
                f"the spool cannot be prepared: {where} is not writable by this user "
                f"(uid {uid}): run `chown -R {uid}:{gid} {root}` (in a container: on the host "
                f"folder mounted at {root})"
            ) from None
        except OSError as exc:
            raise ConfigError(f"the spool {self.spool.root} cannot be prepared: {exc}") from None
        lock = DaemonLock(self.spool.state / LOCK_FILE)
        lock.acquire()
        self._lock = lock  # held: close() gives it back
        # temp files a killed writer left in the state directory's folders (control
        # requests and answers, webhook deliveries); the clip cache sweeps its own
        remove_orphan_temps(self.spool.state.glob("*/.*.tmp"))
        self.presets.finish_intents()  # a hot-folder take a kill cut short becomes its job
        try:  # private inputs nothing names: failed jobs that keep them (orphans.py)
            fail_orphans(self.spool, self.settings, self.manager.get_vram_usage())
        except OSError as exc:  # the spool's trouble: tried again at the next start
            log.warning("spool.orphans_not_checked", error=str(exc))
        try:
            self.dispatch.start()
            self.webhook.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the dispatch, drop every model, give the state directory back."""
        try:
            self.dispatch.close()
        finally:
            self.webhook.close()
            self.manager.close()
            if self._lock is not None:  # its workers are gone: so are their writes
                self.runner.clips.remove_orphans()
                self._lock.release()
                self._lock = None

    def run(self, stop: threading.Event, *, once: bool = False) -> int:
        """Start, serve until `stop`, close (AlreadyRunningError: another daemon runs)."""
        with self:
            self.serve(stop, once=once)
        log.info("service.stop")
        return 0

    def serve(self, stop: threading.Event, *, once: bool = False) -> None:
        """Watch and loop until `stop` (inside `with service:`)."""
        log.info(
            "service.start",
            version=voicedrop.__version__,
            spool=str(self.settings.spool),
            device=self.device.name,
            policy=self.settings.policy,
            once=once,
        )
        # the first job as quick as the next; a device worker warms up its own post stage
        warmup = self.warmup = Warmup(() if self.worker is not None else POST_STAGE, self._warm)
        warmup.start()
        try:
            self._serve(stop, once)
        finally:
            warmup.close()

    def _warm(self) -> None:
        """On the warm-up's thread, once its imports are done: the post stage's work run once."""
        try:
            if self.worker is None:
                warm_post_stage()
        except Exception as exc:  # its real use reports it, where it matters
            log.debug("warmup.post_stage_failed", error=str(exc))
        self.status_file.dirty = True
        self.wake.set()

    def _serve(self, stop: threading.Event, once: bool) -> None:
        with self.watcher, status.Heartbeat(self.status_file, threading.current_thread()):
            self.executor.start()
            ready = self.executor.scan()  # READY=1 comes after the first scan
            self.status_file.set_state("idle")
            self.notifier.notify(
                ready="1", status=f"watching {self.spool.inbox}: {ready} job(s) ready"
            )
            self.controls.preload(self.settings.residency.preload, self.dispatch.control)
            self.executor.run(
                stop,
                self.wake,
                once=once,
                tick=self._between_jobs,
                idle=self._idle,
                max_wait_s=self._max_wait(),
            )
            self.notifier.notify(stopping="1", status="stopping")
            self.status_file.set_state("stopped")
            self.textfile.export(force=True)

    def _between_jobs(self) -> None:
        self.watcher.check()  # between jobs only: nothing is claimed during one anyway
        if self.worker is not None and self.worker.state == "starting":
            self.status_file.dirty = True  # told again until it says it is ready
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        if self.manager.expire():  # keep-alive: idle models leave the GPU
            self.status_file.dirty = True
        self.presets.collect()  # hot folders: files dropped in become manifests
        if self.controls.handle(self.dispatch.control):  # load / unload
            self.status_file.set_state("idle")
        if self.retention.due():
            try:
                self.retention.sweep()
            except OSError as exc:  # the spool's trouble: the next sweep tries again
                log.warning("retention.failed", error=str(exc))
        self._tick()

    def reload(self) -> None:
        """Apply a re-read configuration between jobs (SIGHUP, systemctl reload).

        Every section sections.py applies changes (engines, voices, models, limits,
        scheduling, the residency policy, presets, notify, retention …); the models of the
        old configuration leave memory. A configuration that is invalid, or that changes a
        section that needs a restart, is refused naming it; the daemon goes on as it was.
        """
        if self.load is None:
            log.warning("service.reload_unsupported")
            return
        if not self.dispatch.reloadable:  # cluster workers hold the settings they began with
            log.error("service.reload_refused", error="restart to reconfigure cluster workers")
            self.notifier.notify(status="reload refused: restart to reconfigure the cluster")
            return
        try:
            settings = self.load()
            check_reloadable(settings, self.settings)
            engines = build_engines(settings)
            check_preload(settings, planner := Planner(settings, engines))
            check_presets(settings, planner)
        except ConfigError as exc:
            log.error("service.reload_refused", error=exc.message)
            self.notifier.notify(status=f"reload refused: {exc.message.splitlines()[-1]}")
            return
        self._apply(settings, engines)
        log.info("service.reloaded", policy=settings.policy)
        self.status_file.set_state("idle")

    def _apply(self, settings: Settings, engines: Engines) -> None:
        """Every part built from a section in APPLIED_ON_RELOAD, built again."""
        self.manager.close()
        self.settings, self.engines = settings, engines
        self.manager = ResidencyManager.from_settings(settings, self.device)
        self.runner = JobRunner(settings, engines, self.manager)
        self.attempts.reconfigure(settings.limits, self.runner)
        self.queue.reconfigure(scheduler_for(settings), self._peek(settings))
        self.retention.settings = settings.retention
        self.presets.reconfigure(settings)
        self.webhook.reconfigure(settings.notify)
        self.dispatch.reconfigure(settings)

    def _peek(self, settings: Settings) -> ManifestPeek:
        return ManifestPeek(settings, self.spool.inbox, self.gate, self.runner.planner)

    def _in_memory(self) -> set[str]:
        """Models a job can start with, no disk load: on the device or in the warm tier."""
        if not self.settings.scheduler.affinity:
            return set()
        if self.worker is not None:  # the worker's, as its last job left them
            return set(self.worker.resident) if self.worker.alive() else set()
        return self.manager.in_memory_keys()

    def _max_wait(self) -> float:
        """How long the loop may wait: the heartbeat, or half systemd's watchdog period."""
        watchdog = self.notifier.watchdog_s
        return min(status.HEARTBEAT_S, watchdog / 2) if watchdog else status.HEARTBEAT_S

    def _idle(self) -> None:
        """Nothing to run: tell what is pending, and give freed memory back (heap.py)."""
        self.flush()
        self.heap.idle()

    def _tick(self) -> None:
        """On every loop turn: the heartbeat, systemd's watchdog, the metrics textfile."""
        self.status_file.beat()
        self.systemd.watchdog()
        self.textfile.export()

    def flush(self) -> None:
        """Write what the status outputs hold back (throttled progress, 'idle')."""
        self.status_file.flush()
        self.systemd.flush()

    def _snapshot(self) -> dict[str, object]:
        """What status.json says besides the job: where, on what, and what is resident."""
        workers = self.dispatch.workers()
        vram, models = self.manager.get_vram_usage(), self.manager.models()
        warming = self.warmup is not None and not self.warmup.finished
        if self.worker is not None:  # the device is the worker's; with none, what the card said
            vram, models = worker_vram(workers[0], vram), self.worker.models()
            warming = warming or workers[0]["state"] == "starting"
        return {
            "warming": warming,
            "watcher": self.watcher.mode,
            "device": self.device.name,
            "policy": self.settings.policy,
            "vram": vram,
            "models": models,
            "workers": workers,
        }
