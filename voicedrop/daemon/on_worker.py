"""The Dispatch (daemon/executor.py) of a daemon with a device worker process: one job at a
time, its computation on the worker (daemon/process.py), everything else here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voicedrop.config import Settings
from voicedrop.daemon.attempt import Attempts, SteppedAside
from voicedrop.daemon.process import DeviceWorker
from voicedrop.daemon.queue import JobQueue
from voicedrop.pipeline.control import unknown_model
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.runner import JobInput, Outcome
from voicedrop.report import JobReport
from voicedrop.spool.control import ControlRequest


@dataclass
class OnWorker:
    """A Dispatch (daemon/executor.py): one job at a time, computed on the device worker."""

    queue: JobQueue
    attempts: Attempts
    worker: DeviceWorker
    woken: Callable[[], None] = lambda: None  # wakes the loop: the worker said it is ready
    poll_s: float | None = None
    reloadable: bool = True

    def start(self) -> None:
        """The worker starts with the daemon, so the first job is as quick as the next; it
        exits when idle (`[residency] worker_idle_s`) as after any job."""
        self.worker.start(on_ready=self.woken)

    def step(self) -> JobReport | SteppedAside | None:
        job = self.queue.next()
        if job is None:
            if self.queue.gate.waiting():  # a file is still settling: start while it does
                self.worker.start()
            return None
        self.worker.start()  # its start overlaps the attempt's own part
        return self.attempts.run(job, compute=self._compute)

    def _compute(
        self,
        job: JobInput,
        progress: Callable[[str], None],
        upcoming: Callable[[], Sequence[ModelSpec]],
    ) -> Outcome:
        runner = self.attempts.runner
        keys = [spec.key for spec in upcoming()]  # prefetched there if the worker knows them
        return self.worker.run(job, progress, runner.finish, runner.manager.get_vram_usage, keys)

    def busy(self) -> bool:
        return False

    def drain(self, tick: Callable[[], None]) -> None:
        return None

    def workers(self) -> list[dict[str, Any]]:
        return [self.worker.describe()]

    def control(self, request: ControlRequest) -> dict[str, Any]:
        """A load starts the worker if none lives; an unload with none has nothing to do."""
        unknown = unknown_model(request.key, self.attempts.runner.planner)
        if unknown is not None:
            return unknown
        if request.op == "unload" and not self.worker.alive():
            return {"ok": True, "model": request.key, "view": None}
        return self.worker.control(request.op, request.key, request.keep_alive)

    def reconfigure(self, settings: Settings) -> None:
        """A reload: the worker holds the settings it started with; the next job starts one
        on the new settings."""
        self.worker.close()
        self.worker.settings = settings

    def close(self) -> None:
        self.worker.close()
