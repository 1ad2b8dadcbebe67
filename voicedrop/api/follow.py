"""A job's audio as the HTTP side follows it: the live stream while the job is made, its
finished outputs once it is done.

A streaming request (`/v1/audio/speech`, `GET /jobs/{id}/stream`) waits until its job's
audio can be read, then hands it on chunk by chunk. While the job is queued, a client that
goes away, or a wait past `[http] max_wait_s`, withdraws it (it is reported `cancelled`):
nobody is left to hear it, and the client's retry must not find it still queued. Once the
job runs it is followed to its end. The live file (spool/stream.py) is read as it grows;
a job that finished before it was followed is read from its outputs (the clips of a
script job one after another, as its stream has them). A followed job ends when its
report is published, not when its last sample is made: a client that has the whole
response finds the job done. A job that fails after its audio began raises JobFailed:
the response is cut off, so the client sees it incomplete.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf
from fastapi.concurrency import run_in_threadpool

from voicedrop.api.desk import Desk, Rejected
from voicedrop.codecs import to_int16
from voicedrop.spool.ledger import hold
from voicedrop.spool.state import JobState
from voicedrop.spool.stream import StreamHeader, open_stream, read_header, stream_folder

CHUNK = 64 * 1024
STREAM_SOON_S = 0.005  # how often a running job's stream is looked for until it is there
DECODE_S = 2.0  # a finished job's outputs are read and sent this many seconds at a time


class JobFailed(Exception):
    """The job failed after its audio began."""

    def __init__(self, state: JobState) -> None:
        super().__init__(state.error.message if state.error else "the job failed")
        self.state = state


@dataclass(frozen=True)
class Source:
    """A job's audio: 16-bit little-endian mono PCM at `sample_rate`, chunk by chunk."""

    job_id: str
    sample_rate: int
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class Withdrawn:
    """The job was withdrawn while queued: the client went away, or it waited too long."""

    job_id: str
    waited_s: float
    client_gone: bool


async def audio_of(
    desk: Desk,
    job_id: str,
    *,
    gone: Callable[[], Awaitable[bool]],
    start_within_s: float | None = None,
    withdraw: bool = True,
) -> Source | JobState | Withdrawn:
    """The job's audio as soon as it can be read; its final state if it ended with none
    (failed, or cancelled elsewhere); Withdrawn if the client went away or the job did not
    start within `start_within_s` — and then, with `withdraw` (the client's own job), the
    job is cancelled too. It looks when the job's notes say something changed (notes.py),
    on a worker thread: the event loop only waits."""
    began = time.monotonic()
    with desk.notes.following(job_id) as note:
        while True:
            state, opened = await run_in_threadpool(_look, desk, job_id)
            if state is None:
                return JobState(job_id, "failed")
            if state.status == "queued":
                waited = time.monotonic() - began
                client_gone = await gone()
                if client_gone or (start_within_s is not None and waited > start_within_s):
                    if not withdraw:
                        return Withdrawn(job_id, waited, client_gone)
                    try:
                        await run_in_threadpool(desk.cancel, job_id)
                        return Withdrawn(job_id, waited, client_gone)
                    except Rejected:
                        continue  # it has just started: follow it
            elif state.status == "running":
                if opened is not None:
                    header, audio = opened
                    return Source(job_id, header.sample_rate, _live(desk, job_id, header, audio))
            elif state.status in ("done", "duplicate") and state.outputs:
                return await _finished(desk, state)
            else:
                return state
            # a job that runs has its live stream in a moment: the watch on its new folder
            # may be set up after the first write, so it is looked for often until then
            soon = _left(start_within_s, began) if state.status == "queued" else STREAM_SOON_S
            await note.wait(soon)


def _left(within_s: float | None, began: float) -> float | None:
    """What is left of a queued job's wait to start (a little past it: then it goes)."""
    return None if within_s is None else max(0.001, began + within_s - time.monotonic())


def _look(desk: Desk, job_id: str) -> tuple[JobState | None, tuple[StreamHeader, BinaryIO] | None]:
    """The job's state, and its live stream opened if it runs and has one."""
    state = desk.state(job_id)
    if state is None or state.status != "running":
        return state, None
    return state, open_stream(desk.spool.work / job_id)


async def _live(
    desk: Desk, job_id: str, header: StreamHeader, audio: BinaryIO
) -> AsyncIterator[bytes]:
    """The live file, read as it grows, to its end; JobFailed if the job fails first. Read
    on a worker thread when its notes say it grew (or its job ended)."""
    folder = stream_folder(desk.spool.work / job_id)
    carry = b""
    try:
        with desk.notes.following(job_id) as note:
            while True:
                data, ended = await run_in_threadpool(_more, desk, job_id, folder, header, audio)
                data, carry = _whole_samples(carry + data)
                if data:
                    yield data
                if ended:
                    return
                if not data:
                    await note.wait()
    finally:
        audio.close()


def _more(
    desk: Desk, job_id: str, folder: Path, header: StreamHeader, audio: BinaryIO
) -> tuple[bytes, bool]:
    """What the live file holds that was not read yet, and whether that is all of it."""
    data = audio.read(CHUNK)
    if data:
        return data, False
    now = read_header(folder)
    if now is not None:  # still being made, or written out (the post stage)
        if now.sample_rate != header.sample_rate:  # restarted anew: not ours to join
            raise JobFailed(JobState(job_id, "failed"))
        return b"", False
    state = desk.state(job_id)  # the folder is gone: the job was committed, or is failing
    if state is not None and state.status == "failed":
        raise JobFailed(state)
    if state is None or state.final:
        return audio.read(), True  # its writer closed it before the commit
    return b"", False


def _whole_samples(data: bytes) -> tuple[bytes, bytes]:
    cut = len(data) - len(data) % 2
    return data[:cut], data[cut:]


async def _finished(desk: Desk, state: JobState) -> Source:
    """A done job's audio from its outputs: every clip but a script's dub track, in order."""
    assert state.folder is not None
    records = state.report.outputs if state.report else []
    names = [o.file for o in records if o.segment != "dub"] or state.outputs[:1]
    paths = [state.folder / name for name in names]
    held = hold(state.folder)  # retention waits until it is sent
    try:
        rate = (await run_in_threadpool(sf.info, str(paths[0]))).samplerate
    except BaseException:
        if held is not None:
            os.close(held)
        raise
    return Source(state.job_id, rate, _decoded(paths, rate, held))


async def _decoded(paths: list[Path], rate: int, held: int | None) -> AsyncIterator[bytes]:
    try:
        for path in paths:
            with sf.SoundFile(str(path)) as audio:
                block = int(DECODE_S * audio.samplerate)
                while True:
                    samples = await run_in_threadpool(audio.read, block, "float32")
                    if not len(samples):
                        break
                    yield await run_in_threadpool(_pcm, samples, audio.samplerate, rate)
    finally:
        if held is not None:
            os.close(held)


def _pcm(samples: npt.NDArray[np.float32], source_rate: int, rate: int) -> bytes:
    mono = samples.mean(axis=1) if samples.ndim > 1 else samples
    if source_rate != rate:
        import soxr

        mono = soxr.resample(mono, source_rate, rate)
    return to_int16(mono)
