"""A long track written as it is made, in bounded memory: a script's dub track.

A dub track is as long as the script's timeline — hours of mostly silence for a few
seconds of speech. Built whole, a two-hour track took gigabytes (the samples, the
encoded file, the loudness meter's filtered copy in float64). Here it goes to its file in
blocks: each block is summed from the clips that overlap it, limited to full scale,
written, and measured (peak; integrated loudness by BS.1770 with pyloudnorm's K-weighting
filters run block by block, their state carried across), so memory holds the clips and
one block, whatever the timeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from voicedrop.pipeline.audio import dbfs, file_format

BLOCK = 1 << 16  # samples per block written

Samples = npt.NDArray[np.float32]


def placed_blocks(
    placed: list[tuple[int, Samples]], length: int, block: int = BLOCK
) -> Iterator[Samples]:
    """The track of `length` samples that has each clip `(start, samples)` added at its
    start (overlapping speech summed), limited to full scale, block by block."""
    order = sorted(range(len(placed)), key=lambda i: placed[i][0])
    waiting, active = 0, []  # clips not yet reached (by start), clips that may overlap
    for begin in range(0, length, block):
        end = min(begin + block, length)
        while waiting < len(order) and placed[order[waiting]][0] < end:
            active.append(placed[order[waiting]])
            waiting += 1
        active = [(s, x) for s, x in active if s + len(x) > begin]
        out = np.zeros(end - begin, np.float32)
        for start, samples in active:
            lo, hi = max(start, begin), min(start + len(samples), end)
            if lo < hi:
                out[lo - begin : hi - begin] += samples[lo - start : hi - start]
        np.clip(out, -1.0, 1.0, out=out)
        yield out


class LoudnessMeter:
    """Integrated loudness (ITU-R BS.1770-4, mono) of a signal given block by block: the
    figure pyloudnorm's `Meter.integrated_loudness` gives for the whole signal, without
    holding it. The K-weighting filters are pyloudnorm's own, run with carried state."""

    def __init__(self, rate: int) -> None:
        import pyloudnorm

        meter = pyloudnorm.Meter(rate)
        self._filters = [(f.b, f.a) for f in meter._filters.values()]
        self._state: list[npt.NDArray[np.float64]] = [  # at rest, as pyloudnorm starts
            np.zeros(max(len(a), len(b)) - 1) for b, a in self._filters
        ]
        self.rate = rate
        self.hop = round(rate * meter.block_size * (1 - meter.overlap))  # 100 ms
        self._hops: list[float] = []  # sum of squares of each whole 100 ms hop
        self._partial = np.zeros(0)  # filtered samples not yet a whole hop
        self.samples = 0

    def add(self, block: Samples) -> None:
        from scipy.signal import lfilter

        data: npt.NDArray[np.float64] = block.astype(np.float64)
        for i, (b, a) in enumerate(self._filters):
            data, self._state[i] = lfilter(b, a, data, zi=self._state[i])
        self.samples += len(block)
        data = np.concatenate([self._partial, data])
        whole = len(data) // self.hop * self.hop
        if whole:
            self._hops.extend(np.square(data[:whole]).reshape(-1, self.hop).sum(axis=1))
        self._partial = data[whole:]

    def lufs(self) -> float | None:
        """None where it is undefined: shorter than one 400 ms block, or silence."""
        seconds = self.samples / self.rate
        if seconds < 0.4:
            return None
        count = int(np.round((seconds - 0.4) / 0.1)) + 1
        rest = float(np.square(self._partial).sum())  # the last hop, cut short by the end
        hops = np.asarray([*self._hops, rest, 0.0, 0.0, 0.0])
        sums = np.convolve(hops, np.ones(4), mode="valid")[:count]  # 4 hops: one block
        z = sums / (0.4 * self.rate)
        with np.errstate(divide="ignore"):
            blocks = -0.691 + 10.0 * np.log10(z)
        kept = z[blocks >= -70.0]
        if not kept.size:
            return None
        relative = -0.691 + 10.0 * math.log10(float(kept.mean())) - 10.0
        gated = z[(blocks > relative) & (blocks > -70.0)]
        if not gated.size:
            return None
        value = -0.691 + 10.0 * math.log10(float(gated.mean()))
        return round(value, 2) if math.isfinite(value) else None


@dataclass(frozen=True)
class Written:
    duration_s: float
    peak_dbfs: float
    loudness_lufs: float | None


class _File:
    """The file libsndfile writes through: an error is kept, not raised inside its C
    callback (where it would be printed and lost), and raised after the write."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("xb+")
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            return 0

    def read(self, size: int = -1) -> bytes:
        return self.fh.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def write_blocks(
    path: Path, fmt: str, rate: int, blocks: Iterable[Samples], bit_depth: int = 16
) -> Written:
    """Write `blocks` (mono, -1..1) as one file of `fmt`, fsynced; never overwrite. A full
    disk is an OSError and no partial file is left."""
    container, subtype = file_format(fmt, bit_depth)
    meter, peak, count = LoudnessMeter(rate), 0.0, 0
    sink = _File(path)
    try:
        with sf.SoundFile(
            sink,
            "w",
            samplerate=rate,
            channels=1,
            format=container,
            subtype=subtype,
        ) as out:
            for block in blocks:
                try:
                    out.write(block)
                except AssertionError:  # soundfile's word for a short write: why, if known
                    sink.check()
                    raise
                sink.check()
                meter.add(block)
                peak = max(peak, float(np.abs(block).max())) if len(block) else peak
                count += len(block)
        sink.check()
        sink.fh.flush()
        os.fsync(sink.fh.fileno())
    except BaseException:
        sink.fh.close()
        path.unlink(missing_ok=True)
        raise
    sink.fh.close()
    return Written(count / rate, dbfs(peak), meter.lufs())
