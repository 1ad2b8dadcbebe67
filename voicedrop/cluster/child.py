"""The device worker process: the models, torch and the device context, in a child of the
daemon that can end.

The daemon (daemon/process.py) spawns it — never forks it: a fork would copy the
daemon's threads and locks — and talks to it over one pipe. It builds a `Worker` (the
device, the residency manager, the engines, the job runner: cluster/worker.py) and runs
one job attempt at a time. The daemon keeps the spool: the worker is handed the job's
folders on this host, writes its outputs there, and sends its audio as it is made back to
the daemon, which appends it to the job's stream. After `idle_s` without work it exits, and
with it every byte it held on the device and in host memory; a fault in a library ends
it, never the daemon.

The protocol, in order (tuples of a name and its values):

    daemon → worker   ("wanted",)   (a job waits: say ready now, not once warm)
    worker → daemon   ("ready", info)
    daemon → worker   ("run", ProcessWork)
    worker → daemon   ("stage", message) | ("stream.open", rate) | ("stream.write", pcm)
                      | ("stream.end",)
                      ("preempt?",)  → daemon → worker ("preempt", bool)
    worker → daemon   ("done", ProcessDone)
    daemon → worker   ("control", op, key, keep_alive)  → worker → daemon ("controlled",
                      result, WorkerHeld)   (a client's load or unload, between jobs)
    worker → daemon   ("models", WorkerHeld)   (idle: a model's keep-alive ran out)
    daemon → worker   ("stop",)
"""

from __future__ import annotations

import ctypes
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from voicedrop.config import DRILL_ENGINES, Settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.control import control_model
from voicedrop.pipeline.runner import JobInput, Outcome
from voicedrop.pipeline.stages import Take
from voicedrop.report import ModelView
from voicedrop.script import Script
from voicedrop.warmup import POST_STAGE, Warmup

if TYPE_CHECKING:
    from voicedrop.cluster.worker import Worker

log = structlog.get_logger(__name__)
PR_SET_PDEATHSIG = 1
WARM_POLL_S = 0.02


@dataclass(frozen=True)
class ProcessWork:
    """One attempt of one job, on this host: its folders, not its bytes."""

    job_id: str
    manifest: Manifest
    reference: Path | None
    out_dir: Path
    script: Script | None = None
    stream: bool = True  # send its audio as it is made
    stream_earlier: tuple[int, int] | None = None  # an earlier attempt's stream: rate, bytes
    preemptible: bool = False  # ask between segments whether to step aside
    made: tuple[Take, ...] = ()  # segments made before it last stepped aside
    upcoming: tuple[str, ...] = ()  # the next job's first models (keys): prefetched if known


@dataclass(frozen=True)
class WorkerHeld:
    """What the worker holds, as it tells the daemon after each job, request or expiry."""

    resident: frozenset[str]  # models in memory (device or warm tier)
    models: dict[str, ModelView]
    vram: dict[str, Any]  # the seven VRAM fields
    card: dict[str, Any] | None  # the last reading of the card (neighbours.py)

    @classmethod
    def of(cls, worker: Worker) -> WorkerHeld:
        manager = worker.manager
        return cls(
            frozenset(manager.in_memory_keys()),
            manager.models(),
            manager.get_vram_usage().model_dump(),
            worker.card(),
        )


@dataclass(frozen=True)
class ProcessDone:
    outcome: Outcome
    held: WorkerHeld


class PipeSink:
    """A `pipeline.live.PcmSink` that sends the audio to the daemon, which owns the stream
    file; what an earlier attempt left is known from the work (no round trip)."""

    def __init__(self, conn: Connection, earlier: tuple[int, int] | None) -> None:
        self.conn = conn
        self.earlier = earlier

    def open(self, sample_rate: int) -> int:
        self.conn.send(("stream.open", sample_rate))
        if self.earlier is not None and self.earlier[0] == sample_rate:
            return self.earlier[1]  # the stream goes on from there, as the daemon's does
        return 0

    def write(self, data: bytes) -> None:
        self.conn.send(("stream.write", bytes(data)))

    def end(self) -> None:
        self.conn.send(("stream.end",))


def serve(conn: Connection, settings: Settings, idle_s: float, daemon: int) -> None:
    """The worker process's body: until told to stop, idle for `idle_s` (0: after one job;
    negative: never), or the daemon (pid `daemon`) is gone."""
    from voicedrop.cluster.worker import Worker
    from voicedrop.pipeline.audio import warm as warm_post_stage

    _die_with(daemon)
    worker = Worker(settings, 0, scratch_prefix="voicedrop-device-worker-", own_state=False)
    warmup = Warmup((*_model_libraries(settings), *POST_STAGE), warm_post_stage)
    warmup.start()  # beside the first job's own start
    try:
        # ready once its imports are done (started with the daemon: its first job is then
        # as quick as the next), or at once when the daemon says a job waits ("wanted"):
        # the job waits only on the imports it needs
        while not warmup.finished and not conn.poll(WARM_POLL_S):
            pass
        if not conn.poll(0):  # nothing waits: the first job's own path made warm too
            _warm_jobs(worker)
        conn.send(("ready", worker.status()))
        while True:
            message = _next(conn, idle_s, worker)
            if message is None or message[0] == "stop":
                return  # idle, yielding, the daemon gone, or told: exit, and with it the
                # device context and the warm tier
            if message[0] == "control":
                _, op, key, keep_alive = message
                result = control_model(op, key, keep_alive, worker.runner.planner, worker.manager)
                conn.send(("controlled", result, WorkerHeld.of(worker)))
            if message[0] == "run":
                work: ProcessWork = message[1]
                outcome = worker.run_here(
                    _job(conn, work),
                    lambda m: conn.send(("stage", m)),
                    partial(worker.manager.known, work.upcoming),
                )
                conn.send(("done", ProcessDone(outcome, WorkerHeld.of(worker))))
                if idle_s == 0 or poisoned(outcome):
                    return  # exit after each job; or a device context no job can use again
    finally:
        worker.close()
        warmup.close()  # an exit in the middle of a native library's import aborts


def _warm_jobs(worker: Worker) -> None:
    """A one-word job, in a scratch folder, per engine with nothing to load onto a device
    (espeak): the engine loaded and heard once, the runner's path run once, so the first
    real job is as quick as the next. Engines with weights are left until a job (or
    `[residency] preload`) wants them; the drill engines too."""
    planner = worker.runner.planner
    with tempfile.TemporaryDirectory(prefix="voicedrop-warm-up-") as scratch:
        for name in planner.engine_names:
            if name in DRILL_ENGINES:
                continue
            try:
                manifest = Manifest.model_validate({"text": "Ready.", "tts": {"engine": name}})
                specs = planner.plan(manifest, None).tts.values()
                if any(s.expected_bytes != 0 or s.checkpoint is not None for s in specs):
                    continue
                job = JobInput(f"warm-up-{name}", manifest, None, Path(scratch) / name)
                worker.run_here(job, lambda _message: None)
            except Exception as exc:  # a real job reports it, where it matters
                log.debug("worker.warm_up_failed", engine=name, error=str(exc))


def _next(conn: Connection, idle_s: float, worker: Worker) -> tuple[Any, ...] | None:
    """The daemon's next message; None after `idle_s` idle (negative: never), when the
    card's other programs need what this idle process holds, or when the daemon is gone.
    Meanwhile models idle past their keep-alive leave the device (the daemon is told)."""
    idle_until = time.monotonic() + idle_s
    while not worker.over.is_set():
        if worker.manager.expire():
            conn.send(("models", WorkerHeld.of(worker)))
        left = idle_until - time.monotonic()
        try:
            if conn.poll(1.0 if idle_s <= 0 else max(0.0, min(1.0, left))):
                message: tuple[Any, ...] = conn.recv()
                return message
        except (EOFError, OSError):
            return None
        if idle_s > 0 and left <= 0:  # idle (a job that came meanwhile was taken above)
            return None
    log.warning("worker.yielded", why="other programs on the card need its memory")
    return None


# CUDA errors after which the process's device context is unusable until it exits (an
# out-of-memory is not one of them: the residency manager's ladder handles it in place)
POISON = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "CUDA error: an illegal instruction",
    "CUBLAS_STATUS_EXECUTION_FAILED",
)


def poisoned(outcome: Outcome) -> bool:
    """The attempt failed with an error that leaves the device context poisoned."""
    error = outcome.error
    return error is not None and any(p.lower() in error.message.lower() for p in POISON)


# Engines whose models are torch modules: a worker for a configuration that has them
# imports torch as it starts (it starts because a job came), beside the job's own start
TORCH_ENGINES = frozenset({"xtts", "f5tts", "rvc"})


def _model_libraries(settings: Settings) -> tuple[str, ...]:
    engines = {v.engine for v in settings.voices.values()}
    engines |= {m.engine for m in settings.models.values()}
    return ("torch",) if engines & TORCH_ENGINES else ()


def _die_with(parent: int) -> None:
    """Be killed when the daemon dies, `kill -9` included (Linux): an orphaned worker would
    go on writing into a job folder the next daemon runs again."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the pipe's end still stops it at its next message
    if os.getppid() != parent:  # the daemon died before the request was made (reparented)
        os._exit(1)


def _job(conn: Connection, work: ProcessWork) -> JobInput:
    def preempt() -> bool:
        conn.send(("preempt?",))
        kind, answer = conn.recv()
        assert kind == "preempt"
        return bool(answer)

    return JobInput(
        work.job_id,
        work.manifest,
        work.reference,
        work.out_dir,
        work.script,
        stream=PipeSink(conn, work.stream_earlier) if work.stream else None,
        preempt=preempt if work.preemptible else (lambda: False),
        made=work.made,
    )
