"""A job's audio as it is made: the live stream a listener hears before the job is done.

The stage that makes a job's last audio (the TTS stage, or the conversion after it) hands
each piece to `LiveAudio` as soon as it has it: a sentence, a batch, or a converted take
(a conversion takes a whole take, so with one its stream starts as each take is
converted). LiveAudio sends it on, in half-second slices, as 16-bit mono PCM at the rate
the job's output will have, resampled piece by piece with one continuous resampler, to a
`PcmSink` the daemon provides (the spool's stream file, spool/stream.py). The stream is the
outputs' audio before loudness normalisation, which needs the whole take; a script job
streams its clips one after another.

A stage that runs again (an out-of-memory retry, or the job's next attempt) makes its
audio again from the start: what the sink already holds is skipped, never sent twice.
With a deterministic engine (or a seed) the listener hears no seam.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from voicedrop.codecs import codec_rate, to_int16
from voicedrop.pipeline import audio as au

# A piece is sent on in slices this long: a whole take at once (a cached clip, a converted
# take) would otherwise be resampled and sent whole before a listener hears its start.
SLICE_S = 0.5


class PcmSink(Protocol):
    """Where a live stream goes. A sink never raises for its own trouble (a full disk):
    the stream is a courtesy to listeners, never a reason to fail a job."""

    def open(self, sample_rate: int) -> int:
        """Begin (or go on with) the stream at `sample_rate`; return the bytes it holds."""
        ...

    def write(self, data: bytes) -> None: ...

    def end(self) -> None:
        """All of the job's audio is in."""
        ...


class LiveAudio:
    """The stream of one job: `restart()` when a stage begins making its audio, `write()`
    each piece, `end()` when the last is in. `sink` None: a job nobody can follow."""

    def __init__(self, sink: PcmSink | None, fmt: str, sample_rate: int | None) -> None:
        self.sink = sink
        self.fmt = fmt
        self.wanted_rate = sample_rate  # the output's rate, if the job names one
        self.rate: int | None = None  # the stream's, fixed by its first piece
        self._held = 0  # bytes the sink had before this run of the stage
        self._sent = 0  # bytes this run produced (skipped ones included)
        self._resampler: Any = None
        self._source_rate: int | None = None

    def restart(self) -> None:
        """A stage begins (again) making the job's audio from its start."""
        if self.sink is not None and self.rate is not None:
            self._held = max(self._held, self._sent)
        self._sent = 0
        self._resampler = self._source_rate = None

    def write(self, piece: au.Audio) -> None:
        if self.sink is None or piece.samples.size == 0:
            return
        if self.rate is None:
            self.rate = codec_rate(self.fmt, self.wanted_rate or piece.sample_rate)
            self._held = self.sink.open(self.rate)
        step = max(1, int(SLICE_S * piece.sample_rate))
        for start in range(0, piece.samples.size, step):  # a long piece heard as it goes
            part = au.Audio(piece.samples[start : start + step], piece.sample_rate)
            self._put(self._resample(part, last=False))

    def end(self) -> None:
        if self.sink is None or self.rate is None:
            return
        if self._resampler is not None:
            self._put(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.sink.end()

    def _resample(self, piece: au.Audio, *, last: bool) -> np.ndarray[Any, Any]:
        assert self.rate is not None
        if piece.sample_rate == self.rate:
            return piece.samples
        if self._source_rate != piece.sample_rate:  # a new take at another rate
            if self._resampler is not None:
                self._put(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            import soxr

            self._resampler = soxr.ResampleStream(
                piece.sample_rate, self.rate, 1, dtype="float32", quality="HQ"
            )
            self._source_rate = piece.sample_rate
        return self._resampler.resample_chunk(piece.samples, last=last)  # type: ignore[no-any-return]

    def _put(self, samples: np.ndarray[Any, Any]) -> None:
        data = to_int16(samples)
        start, self._sent = self._sent, self._sent + len(data)
        if self._sent <= self._held or self.sink is None:
            return  # the sink has these bytes from an earlier run
        self.sink.write(data[max(0, self._held - start) :])
