"""Audio encoded as it streams: 16-bit PCM in, the bytes of a format out, chunk by chunk.

A job's live stream is raw PCM (spool/stream.py); a client asks for `pcm`, `wav`, `mp3`,
`opus`, `flac` or `aac`. Each encoder turns every chunk into the bytes it can send now, so
the first sentence leaves before the second is made:

- `pcm` is the samples themselves; `wav` a header that says "length unknown" (sizes of
  0xFFFFFFFF, as streaming WAV writers do) and then the samples;
- `mp3`, `opus` and `aac` go through PyAV (FFmpeg's encoders, in the wheel: no system
  FFmpeg) into a buffer emptied after every chunk. libsndfile, which writes the job's
  files, cannot stream MP3 (it seeks back at the end to fill in a frame count that
  decoders trust) and has no AAC encoder;
- `flac` is sent whole at the end: a FLAC header holds the stream's length, and a FLAC
  streamed without it cannot be read by libsndfile (Python's soundfile).

MP3, Opus and AAC take a few sample rates: a stream at another rate is resampled, chunk
by chunk, to the next rate up.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from voicedrop.codecs import CODECS, codec_rate

STREAMING_SIZE = 0xFFFFFFFF


class Encoder(Protocol):
    media_type: str

    def add(self, pcm: bytes) -> bytes:
        """Encode 16-bit little-endian mono samples; return what can be sent now."""
        ...

    def finish(self) -> bytes:
        """The stream ended: what is left to send."""
        ...


def encoder(fmt: str, sample_rate: int) -> Encoder:
    """An encoder of `fmt` for a stream of `sample_rate` (ValueError: not a format)."""
    if fmt == "pcm":
        return Pcm()
    if fmt == "wav":
        return Wav(sample_rate)
    if fmt == "flac":
        return WholeFlac(sample_rate)
    if fmt in Av.FORMATS:
        return Av(fmt, sample_rate)
    raise ValueError(f"no streaming encoder for '{fmt}'")


class Pcm:
    media_type = CODECS["pcm"].media_type

    def add(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


class Wav(Pcm):
    media_type = CODECS["wav"].media_type

    def __init__(self, sample_rate: int) -> None:
        self._header: bytes | None = wav_header(sample_rate, STREAMING_SIZE)

    def add(self, pcm: bytes) -> bytes:
        header, self._header = self._header or b"", None
        return header + pcm

    def finish(self) -> bytes:
        header, self._header = self._header or b"", None  # an empty stream is still a file
        return header


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """A canonical 44-byte header of 16-bit mono PCM; `data_bytes` STREAMING_SIZE: unknown."""
    riff = STREAMING_SIZE if data_bytes == STREAMING_SIZE else 36 + data_bytes
    return (
        struct.pack("<4sI4s", b"RIFF", riff, b"WAVE")
        + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + struct.pack("<4sI", b"data", data_bytes)
    )


class WholeFlac:
    """FLAC, sent whole when the stream ends: its header holds the length, and libsndfile
    (Python's soundfile, among others) cannot read a FLAC streamed without one."""

    media_type = CODECS["flac"].media_type

    def __init__(self, sample_rate: int) -> None:
        self.rate = sample_rate
        self._pcm = bytearray()

    def add(self, pcm: bytes) -> bytes:
        self._pcm += pcm
        return b""

    def finish(self) -> bytes:
        out = io.BytesIO()
        samples = np.frombuffer(bytes(self._pcm), dtype="<i2")
        sf.write(out, samples, self.rate, format="FLAC", subtype="PCM_16")
        return out.getvalue()


class _Outbox(io.RawIOBase):
    """A write-only, unseekable file that holds what was written until it is taken."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._buffer += bytes(data)
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class Av:
    """MP3, Ogg Opus and AAC (ADTS) through PyAV (FFmpeg's encoders), into an unseekable
    output: nothing is written that would need a seek back (MP3 without the Xing frame)."""

    # format -> (FFmpeg muxer, encoder, muxer options)
    FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
        "mp3": ("mp3", "libmp3lame", {"write_xing": "0"}),
        "opus": ("ogg", "libopus", {"page_duration": "20000"}),  # a page every 20 ms
        "aac": ("adts", "aac", {}),
    }

    def __init__(self, fmt: str, sample_rate: int) -> None:
        import av

        self._av = av
        self.media_type = CODECS[fmt].media_type
        self.rate = codec_rate(fmt, sample_rate)
        self._resampler: Any = None
        if self.rate != sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, self.rate, 1, dtype="int16")
        muxer, codec, options = self.FORMATS[fmt]
        self._out = _Outbox()
        self._container = av.open(self._out, "w", format=muxer, options=options)
        stream: Any = self._container.add_stream(codec, rate=self.rate)
        stream.layout = "mono"
        self._stream = stream
        self._pts = 0

    def add(self, pcm: bytes) -> bytes:
        self._encode(self._resample(pcm, last=False))
        return self._out.take()

    def finish(self) -> bytes:
        self._encode(self._resample(b"", last=True))
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._out.take()

    def _resample(self, pcm: bytes, *, last: bool) -> np.ndarray[Any, Any]:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples, last=last), dtype=np.int16)

    def _encode(self, samples: np.ndarray[Any, Any]) -> None:
        if not samples.size:
            return
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
