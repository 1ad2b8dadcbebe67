"""A running job's live audio on disk: `work/<job-id>/stream/`, the one owner of its format.

The daemon appends the job's audio as 16-bit little-endian mono PCM to `audio.pcm` while
the job is made (pipeline/live.py decides what goes in), after writing `audio.json` (the
rate, the sample format). When the last piece is in, `audio.json` is rewritten with
`complete` and the byte count. The HTTP side follows the file as it grows (api/follow.py):
a reader that opened `audio.pcm` keeps reading it after the job is committed and its work
folder removed (an open file outlives its name), so it never loses the end.

The stream is a courtesy to listeners: a write that fails (a full disk) is logged once
and the stream stops growing; the job goes on, and a listener falls back to the job's
finished output. Nothing here is fsync'ed: a stream does not survive a power cut, the
job's attempt does not either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Literal

import structlog
from pydantic import BaseModel, ValidationError

from voicedrop.fsutil import write_atomic

log = structlog.get_logger(__name__)
FOLDER = "stream"
AUDIO = "audio.pcm"
HEADER = "audio.json"
SAMPLE_BYTES = 2


class StreamHeader(BaseModel):
    sample_rate: int
    channels: Literal[1] = 1
    sample_format: Literal["s16le"] = "s16le"
    complete: bool = False
    bytes: int | None = None  # when complete: the whole stream's length

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * SAMPLE_BYTES * self.channels


def stream_folder(job_dir: Path) -> Path:
    return job_dir / FOLDER


class StreamWriter:
    """The daemon's side: a `pipeline.live.PcmSink` for the job in `job_dir`."""

    def __init__(self, job_dir: Path) -> None:
        self.folder = stream_folder(job_dir)
        self._fd: int | None = None
        self._rate: int | None = None
        self._bytes = 0
        self._broken = False

    def open(self, sample_rate: int) -> int:
        """Go on with the stream an earlier attempt began, if it has this rate (a reader may
        hold it open: it is appended to, never truncated); else begin a new one."""
        self._rate = sample_rate
        try:
            self.folder.mkdir(exist_ok=True)
            earlier = read_header(self.folder)
            if earlier is None or earlier.sample_rate != sample_rate:
                (self.folder / AUDIO).unlink(missing_ok=True)  # a reader keeps the old one
                self._header(StreamHeader(sample_rate=sample_rate))
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(self.folder / AUDIO, flags, 0o644)
            self._bytes = os.fstat(self._fd).st_size
        except OSError as exc:
            self._fail(exc)
        return self._bytes

    def earlier(self) -> tuple[int, int] | None:
        """What an earlier attempt left: its stream's rate and bytes (None: nothing). `open`
        at that rate goes on from there; at another rate it begins anew."""
        header = read_header(self.folder)
        if header is None:
            return None
        try:
            return header.sample_rate, (self.folder / AUDIO).stat().st_size
        except OSError:
            return None

    def write(self, data: bytes) -> None:
        if self._fd is None or self._broken:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._bytes += len(data)
        except OSError as exc:
            self._fail(exc)

    def end(self) -> None:
        if self._fd is None or self._broken or self._rate is None:
            return
        try:
            header = StreamHeader(sample_rate=self._rate, complete=True, bytes=self._bytes)
            self._header(header)
        except OSError as exc:
            self._fail(exc)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _header(self, header: StreamHeader) -> None:
        write_atomic(self.folder / HEADER, header.model_dump_json(), overwrite=True, durable=False)

    def _fail(self, exc: OSError) -> None:
        if not self._broken:
            log.warning("stream.write_failed", error=str(exc), action="the job goes on unstreamed")
        self._broken = True
        self.close()


def read_header(folder: Path) -> StreamHeader | None:
    try:
        return StreamHeader.model_validate_json((folder / HEADER).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def open_stream(job_dir: Path) -> tuple[StreamHeader, BinaryIO] | None:
    """The reader's side: the header and the audio file of a job's stream, opened; None
    while the job has none (not started, not streaming yet, or already committed)."""
    folder = stream_folder(job_dir)
    header = read_header(folder)
    if header is None:
        return None
    try:
        return header, (folder / AUDIO).open("rb", buffering=0)
    except OSError:
        return None
