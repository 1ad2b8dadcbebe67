"""Jobs on the device worker process: models, torch and the device context outside the
daemon (`[residency] worker = "process"`).

The daemon keeps the spool, the queue, the HTTP side and every report; each attempt's
computation goes to a child process (cluster/child.py), spawned when a job needs it and
exiting after `[residency] worker_idle_s` without work — then nothing of voicedrop is on
the device, and the daemon's memory is its own. The attempt is the same code as a local
one (attempt.py): only where `runner.run` happens differs. The worker writes the job's
outputs into its folder (same host), sends its audio as it is made (appended here to the
job's stream), and asks between a script's cues whether to step aside.

A worker that dies mid-job (a segfault in a native extension, SIGKILL, out of host
memory) fails that attempt with a transient `worker_lost` error; the job is retried on
a fresh worker, counted against `limits.max_attempts`, and the daemon goes on — its pid
is the same before and after. A worker whose device context a CUDA error poisoned
retires after the attempt it failed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from voicedrop.card import Card, NvmlCard, card_status
from voicedrop.cluster.child import ProcessDone, ProcessWork, WorkerHeld, poisoned, serve
from voicedrop.config import GB, Settings
from voicedrop.errors import TransientError
from voicedrop.pipeline.runner import JobInput, Outcome
from voicedrop.pipeline.stages import never
from voicedrop.report import ModelView, VramStats
from voicedrop.spool.stream import StreamWriter

log = structlog.get_logger(__name__)
START_S = 300.0  # the longest a worker may take to import its libraries and say ready
POLL_S = 0.5  # how often a job's wait looks whether its worker still lives


class WorkerLost(Exception):
    """The worker process ended (or never became ready) with a job on it; `clean`: it
    exited by itself (code 0: idle, or yielding the card) — not a fault."""

    def __init__(self, why: str, clean: bool = False) -> None:
        super().__init__(why)
        self.clean = clean


@dataclass
class DeviceWorker:
    """The daemon's handle on its device worker process: started on demand, ended by its
    own idle timer, by `close`, or by a fault."""

    settings: Settings
    clock: Callable[[], float] = time.monotonic
    state: str = "none"  # none | starting | ready | busy
    _proc: Any = None  # multiprocessing's SpawnProcess
    _conn: Connection | None = None
    _info: dict[str, Any] = field(default_factory=dict)
    _idle_since: float | None = None
    resident: frozenset[str] = frozenset()
    _models: dict[str, ModelView] = field(default_factory=dict)
    card: Card | None = None  # read once when the worker exits, never polled while none lives
    card_after: dict[str, Any] | None = None
    _heard: bool = False  # the worker said something of the job it was sent
    starts: int = 0  # worker processes started over the daemon's life
    lost: int = 0  # of which ended with a job on them

    def __post_init__(self) -> None:
        if self.card is None and self.settings.device != "cpu":
            self.card = NvmlCard()

    @property
    def idle_s(self) -> float:
        return self.settings.residency.worker_idle_s

    def alive(self) -> bool:
        """Whether a worker lives. One that exited on its own (idle) or died between jobs
        is forgotten here; one that died on a job is the job's to find (`_recv`: its
        `worker_lost`): a status written meanwhile must not pull it from under the job."""
        if self._proc is not None and not self._proc.is_alive() and self.state != "busy":
            self._reset()
        return self._proc is not None

    def start(self, on_ready: Callable[[], None] | None = None) -> None:
        """Spawn a worker if none lives; it imports and builds while the daemon goes on
        with the attempt's own part (claim, inputs, checks) — or, at the daemon's start,
        with waiting for the first job, so that job is as quick as the next. `on_ready`
        is called (from a thread) once the worker has said something: the loop then reads
        it (`_drain`)."""
        if self.alive():
            return
        ctx = multiprocessing.get_context("spawn")  # never fork a daemon with threads
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=serve,
            args=(theirs, self.settings, self.idle_s, os.getpid()),
            name="voicedrop-device-worker",
            daemon=True,  # never outlives the daemon
        )
        proc.start()
        theirs.close()
        self._proc, self._conn, self.state = proc, ours, "starting"
        self.starts += 1
        log.info("worker.starting", pid=proc.pid)
        if on_ready is not None:
            threading.Thread(
                target=_when_heard,
                args=(ours, on_ready),
                name="voicedrop-worker-start",
                daemon=True,
            ).start()

    def ready(self) -> None:
        """Wait until the worker said it is ready (WorkerLost if it died instead)."""
        self.start()
        if self.state != "starting":
            return
        deadline = self.clock() + START_S
        self._send(("wanted",))  # a job waits: not for every import of a warm-up
        while self.state == "starting":
            message = self._recv(deadline)
            if message[0] == "ready":
                self._ready(message[1])

    def _ready(self, info: dict[str, Any]) -> None:
        self._info, self.state, self._idle_since = dict(info), "ready", self.clock()
        log.info("worker.ready", pid=self._info.get("pid"), device=self._info.get("device"))

    def run(
        self,
        job: JobInput,
        progress: Callable[[str], None],
        finish: Callable[[Outcome], Outcome],
        before: Callable[[], Any],
        upcoming: Sequence[str] = (),
    ) -> Outcome:
        """One attempt on the worker: its outcome, or a transient `worker_lost` outcome. A
        worker that exits by itself (idle) just as the job is sent, before it says anything
        of it, is replaced and the job sent again: that was no fault of the job's."""
        for again in (True, False):
            try:
                done = self._run(job, progress, upcoming)
                break
            except WorkerLost as exc:
                if again and exc.clean and not self._heard:
                    log.info("worker.replaced", job_id=job.job_id, why=str(exc))
                    continue
                self.lost += 1
                log.warning("worker.lost", job_id=job.job_id, error=str(exc))
                error = TransientError(
                    f"the device worker process ended while it ran this job ({exc})",
                    code="worker_lost",
                )
                return finish(Outcome(before(), error=error))
        self.state, self._idle_since = "ready", self.clock()
        self._held(done.held)
        if self.idle_s == 0 or poisoned(done.outcome):  # it is exiting: let it, before the next
            assert self._proc is not None
            self._proc.join(10.0)
            self._end()
        return done.outcome

    def _run(
        self, job: JobInput, progress: Callable[[str], None], upcoming: Sequence[str]
    ) -> ProcessDone:
        self._heard = False
        self.ready()
        assert self._conn is not None
        work = ProcessWork(
            job.job_id,
            job.manifest,
            job.reference,
            job.out_dir,
            job.script,
            stream=job.stream is not None,
            stream_earlier=job.stream.earlier() if isinstance(job.stream, StreamWriter) else None,
            preemptible=job.preempt is not never,
            made=job.made,
            upcoming=tuple(upcoming),
        )
        self.state = "busy"
        self._send(("run", work))
        return self._serve(job, progress)

    def _send(self, message: tuple[Any, ...]) -> None:
        """Send; a worker that has just ended is found by the next receive (WorkerLost)."""
        assert self._conn is not None
        with contextlib.suppress(OSError):
            self._conn.send(message)

    def control(self, op: str, key: str, keep_alive: float | None) -> dict[str, Any]:
        """A client's load or unload, carried out by the worker (between jobs)."""
        try:
            self.ready()
            assert self._conn is not None
            self._send(("control", op, key, keep_alive))
            while True:
                message = self._recv(None)
                if message[0] == "models":
                    self._held(message[1])
                if message[0] == "controlled":
                    self._held(message[2])
                    self._idle_since = self.clock()  # its idle timer starts again
                    result: dict[str, Any] = message[1]
                    return result
        except WorkerLost as exc:
            self.lost += 1
            log.warning("worker.lost", model=key, error=str(exc))
            error = f"the device worker process ended while it loaded '{key}' ({exc})"
            return {"ok": False, "status": 503, "error": error}

    def _held(self, held: WorkerHeld) -> None:
        """What the worker holds now (after a job, a client's request, a keep-alive)."""
        self.resident, self._models = held.resident, held.models
        self._info["vram"], self._info["card"] = held.vram, held.card

    def _drain(self) -> None:
        """Between jobs: take what the idle worker said of itself (that it is ready, a
        model whose keep-alive ran out) without waiting."""
        if self.state not in ("ready", "starting") or self._conn is None:
            return
        try:
            while self._conn.poll(0):
                message = self._conn.recv()
                if message[0] == "ready":
                    self._ready(message[1])
                elif message[0] == "models":
                    self._held(message[1])
        except (EOFError, OSError):
            return  # it ended: alive() finds out

    def _serve(self, job: JobInput, progress: Callable[[str], None]) -> ProcessDone:
        """Answer the worker while it runs the job, until it is done."""
        assert self._conn is not None
        while True:
            message = self._recv(None)
            kind = message[0]
            self._heard = self._heard or kind != "models"  # it took the job (not a note)
            if kind == "done":
                done: ProcessDone = message[1]
                return done
            if kind == "stage":
                progress(str(message[1]))
            elif kind == "stream.open" and job.stream is not None:
                job.stream.open(int(message[1]))  # held what the worker was told it holds
            elif kind == "stream.write" and job.stream is not None:
                job.stream.write(message[1])
            elif kind == "stream.end" and job.stream is not None:
                job.stream.end()
            elif kind == "preempt?":
                self._conn.send(("preempt", job.preempt()))

    def _recv(self, deadline: float | None) -> tuple[Any, ...]:
        """The worker's next message; WorkerLost when it ended (or passed `deadline`)."""
        if self._conn is None or self._proc is None:  # forgotten already: it ended
            raise WorkerLost("it ended", False)
        while True:
            try:
                if self._conn.poll(POLL_S):
                    message: tuple[Any, ...] = self._conn.recv()
                    return message
            except (EOFError, OSError):
                pass  # the pipe closed: the process is ending, its exit code says why
            if not self._proc.is_alive() or (deadline is not None and self.clock() > deadline):
                why = self._why()
                clean = self._proc.exitcode == 0
                self._end()
                raise WorkerLost(why, clean)

    def _why(self) -> str:
        assert self._proc is not None
        self._proc.join(1.0)
        code = self._proc.exitcode
        if code is None:
            return f"no answer within {START_S:g} s"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def models(self) -> dict[str, ModelView]:
        """The worker's models as it last said (none once it has exited)."""
        self._drain()
        return self._models if self.alive() else {}

    def describe(self) -> dict[str, Any]:
        """For the status file: none / starting / ready / busy, its pid, what it holds, and
        when it will exit if nothing comes."""
        self._drain()
        alive = self.alive()
        exits_in = None
        if alive and self.state == "ready" and self._idle_since is not None and self.idle_s >= 0:
            exits_in = round(max(0.0, self._idle_since + self.idle_s - self.clock()), 1)
        pid = self._proc.pid if alive and self._proc is not None else None
        return {
            "kind": "process",
            "state": self.state,
            "pid": pid,
            "rss_bytes": _rss(pid) if pid is not None else None,
            "device": self._info.get("device") if alive else None,
            "vram": self._info.get("vram") if alive else None,
            "models": sorted(self.resident) if alive else [],
            "card": self._info.get("card") if alive else self.card_after,
            "exits_in_s": exits_in,
            "idle_exit_s": self.idle_s,
            "starts": self.starts,
            "lost": self.lost,
        }

    def close(self) -> None:
        """Stop the worker (it finishes nothing: the daemon only closes between jobs)."""
        if self._proc is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
        self._proc.join(10.0)
        self._end()

    def _end(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5.0)
        self._reset()

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            log.info("worker.exited", pid=self._proc.pid, exit_code=self._proc.exitcode)
            if self.card is not None:  # what the card holds now that ours is gone
                view = self.card.view()
                self.card_after = card_status(self.card, view, {os.getpid()}, 0)
        self._proc, self._conn, self.state = None, None, "none"
        self._idle_since, self.resident, self._info, self._models = None, frozenset(), {}, {}


def _when_heard(conn: Connection, then: Callable[[], None]) -> None:
    """Wait until the worker says something (or ends, or START_S passes), then `then`."""
    with contextlib.suppress(OSError, EOFError, ValueError):
        conn.poll(START_S)
    then()


def _rss(pid: int) -> int | None:
    """A process's resident set, from /proc (None where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def worker_vram(worker: dict[str, Any], own: VramStats) -> VramStats:
    """The seven VRAM fields for a daemon whose device is its worker's: the worker's while
    it lives; with none, what the card said once it exited (NVML: nothing of ours on it);
    else the daemon's own (no card)."""
    if worker.get("vram"):
        return VramStats.model_validate(worker["vram"])
    card = worker.get("card") or {}
    if not card.get("nvml"):
        return own
    return VramStats(
        available=True,
        low_vram_mode=own.low_vram_mode,
        allocated_gb=0.0,
        reserved_gb=0.0,
        free_gb=round(card["free_bytes"] / GB, 3),
        total_gb=round(card["total_bytes"] / GB, 3),
        cached_models=0,
    )
