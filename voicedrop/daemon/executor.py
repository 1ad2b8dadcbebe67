"""The single-threaded loop: `step()` runs one job, `run()` loops until stopped.

The loop knows when to look at the inbox (woken by the watcher, or on the rescan
timer), how long it may wait, and how it stops; which job is next is the queue's
(queue.py), one attempt is attempt.py's, and where a job runs is a `Dispatch`: in this
process, inside `step()` (`Inline`), or on cluster workers (daemon/cluster.py). The
clock, the spool, the device (inside the manager) and the stability gate are
injected, so tests call `step()` and never sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from voicedrop.config import Settings
from voicedrop.daemon.attempt import Attempts, SteppedAside
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.queue import JobQueue
from voicedrop.daemon.wakeup import Waker
from voicedrop.pipeline.control import control_model
from voicedrop.pipeline.neighbours import watch_card
from voicedrop.report import JobReport
from voicedrop.spool.control import ControlRequest


class Dispatch(Protocol):
    """Where the jobs the queue gives run."""

    poll_s: float | None  # how often a busy loop looks for results (None: never busy)
    reloadable: bool  # whether a new configuration can be applied between jobs

    def start(self) -> None:
        """Before the first job (a cluster connects to its workers)."""

    def step(self) -> JobReport | SteppedAside | None:
        """Start what can start; return a report of a job that ended, if one did (or what
        a job that stepped aside for a higher priority made so far)."""

    def busy(self) -> bool:
        """Jobs under way that the loop must wait for (a local job ends inside step)."""

    def drain(self, tick: Callable[[], None]) -> None:
        """At stop: let the jobs under way elsewhere finish, and publish them."""

    def workers(self) -> list[dict[str, Any]]:
        """The workers, for the status file (none: jobs run in this process)."""

    def reconfigure(self, settings: Settings) -> None:
        """A reload's new settings (only called when `reloadable`)."""

    def control(self, request: ControlRequest) -> dict[str, Any]:
        """A client's load or unload of a model, where the models are."""

    def close(self) -> None: ...


@dataclass
class Inline:
    """Jobs run one at a time in this process, each inside `step()`."""

    queue: JobQueue
    attempts: Attempts
    poll_s: float | None = None
    reloadable: bool = True

    def start(self) -> None:
        """The device is this process's: watch the card for its other programs."""
        runner = self.attempts.runner
        watch_card(runner.settings, runner.manager, always=False)

    def step(self) -> JobReport | SteppedAside | None:
        job = self.queue.next()
        return None if job is None else self.attempts.run(job)

    def busy(self) -> bool:
        return False

    def drain(self, tick: Callable[[], None]) -> None:
        return None

    def workers(self) -> list[dict[str, Any]]:
        return []

    def reconfigure(self, settings: Settings) -> None:
        return None

    def control(self, request: ControlRequest) -> dict[str, Any]:
        runner = self.attempts.runner
        return control_model(
            request.op, request.key, request.keep_alive, runner.planner, runner.manager
        )

    def close(self) -> None:
        return None


@dataclass
class Executor:
    queue: JobQueue
    attempts: Attempts
    dispatch: Dispatch
    inbox: InboxIndex
    scan_interval_s: float  # watcher.scan_interval_s: a reload cannot change it
    clock: Callable[[], float] = time.monotonic

    def start(self) -> None:
        self.queue.start()

    def scan(self) -> int:
        return self.queue.scan()

    def step(self) -> JobReport | SteppedAside | None:
        """Run the next job, if any is ready; return its report (or, for a job that stepped
        aside between its segments, what it made so far)."""
        return self.dispatch.step()

    def run(
        self,
        stop: threading.Event,
        wake: Waker,
        *,
        once: bool = False,
        tick: Callable[[], None] = lambda: None,
        idle: Callable[[], None] = lambda: None,
        max_wait_s: float | None = None,
    ) -> None:
        """Loop until `stop`; with `once`, until the inbox holds nothing more to take.
        `stop` is left set when it returns (a run is over either way)."""
        ended = threading.Event()
        noter = threading.Thread(
            target=self._note_stop, args=(stop, ended), name="voicedrop-stop-note", daemon=True
        )
        noter.start()
        try:
            self._loop(stop, wake, once, tick, idle, max_wait_s)
        finally:
            ended.set()
            stop.set()  # releases the noter: nothing polls while the daemon waits
            noter.join()

    def _note_stop(self, stop: threading.Event, ended: threading.Event) -> None:
        """The moment a stop is asked for, the running job's folder says so: if a kill
        follows (systemd's stop timeout), it was not the job's fault (deaths.py). A thread,
        because the loop itself may be inside a long computation."""
        stop.wait()
        if not ended.is_set():
            self.attempts.witness.stopping()

    def _loop(
        self,
        stop: threading.Event,
        wake: Waker,
        once: bool,
        tick: Callable[[], None],
        idle: Callable[[], None],
        max_wait_s: float | None,
    ) -> None:
        queue, dispatch = self.queue, self.dispatch
        last_scan = self.clock()
        while not stop.is_set():
            tick()
            timed = self.clock() - last_scan >= self.scan_interval_s
            if wake.is_set() or timed:
                wake.clear()
                queue.rescan, last_scan = True, self.clock()
            try:
                if timed:
                    self.inbox.relist()  # events are hints: the listing, now and then, is truth
                    queue.adopt()
                if self.step() is not None:
                    continue
            except OSError as exc:  # the spool itself fails: disk full, share offline
                queue.backoff.failed(exc)
                continue
            idle()
            if once and not (queue.waiting() or dispatch.busy()):
                break
            timeout = 0.1 if queue.gate.waiting() else self.scan_interval_s
            if dispatch.busy() and dispatch.poll_s is not None:
                timeout = min(timeout, dispatch.poll_s)
            due = queue.due()
            if due is not None:
                timeout = min(timeout, max(0.0, due - self.clock()))
            wake.wait(min(timeout, max_wait_s or timeout))
        dispatch.drain(tick)
