"""Audio in and out: resampling (soxr), loudness (pyloudnorm), atomic files (soundfile)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from voicedrop.codecs import CODECS

PEAK_CEILING_DBFS = -1.0
MIN_LOUDNESS_SECONDS = 0.4  # BS.1770 gating needs one 400 ms block


@dataclass(frozen=True)
class Audio:
    samples: npt.NDArray[np.float32]  # mono, -1..1
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def from_int16(data: npt.NDArray[np.int16], sample_rate: int) -> Audio:
    return Audio((data.astype(np.float32) / 32768.0), sample_rate)


def join(pieces: Iterable[Audio]) -> Audio:
    """The pieces an engine made, one after the other, as one take (all at one rate)."""
    parts = list(pieces)
    if not parts:
        return Audio(np.zeros(0, np.float32), 22050)
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise ValueError("pieces of one take at different sample rates")
    return Audio(np.concatenate([p.samples for p in parts]).astype(np.float32), rate)


def resample(audio: Audio, rate: int) -> Audio:
    if rate == audio.sample_rate:
        return audio
    import soxr

    out = soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ")
    return Audio(np.asarray(out, dtype=np.float32), rate)


def peak_dbfs(audio: Audio) -> float:
    return dbfs(float(np.max(np.abs(audio.samples))) if audio.samples.size else 0.0)


def dbfs(peak: float) -> float:
    """A peak (0..1) in dBFS, to two decimals; silence is -inf."""
    return round(20 * math.log10(peak), 2) if peak > 0 else -math.inf


def loudness_lufs(audio: Audio) -> float | None:
    """Integrated loudness, or None where it is undefined (too short, or silence)."""
    if audio.duration_s < MIN_LOUDNESS_SECONDS:
        return None
    import pyloudnorm

    value = float(pyloudnorm.Meter(audio.sample_rate).integrated_loudness(audio.samples))
    return round(value, 2) if math.isfinite(value) else None


def normalize_loudness(audio: Audio, target_lufs: float) -> Audio:
    """Reach the target loudness with the peaks held under the ceiling by a limiter.

    Speech has a high crest factor: plain gain to -16 LUFS would clip, and plain
    gain pulled back under the ceiling would miss the target by several LU. So
    gain and limit, measure, and correct the gain a few times.
    """
    current = loudness_lufs(audio)
    if current is None:
        return audio
    gain_db = target_lufs - current
    out = audio
    for _ in range(4):
        out = Audio(
            _limit(audio.samples * np.float32(10 ** (gain_db / 20)), audio.sample_rate),
            audio.sample_rate,
        )
        measured = loudness_lufs(out)
        if measured is None or abs(measured - target_lufs) < 0.2:
            break
        gain_db += target_lufs - measured
    return out


def _limit(x: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """A look-ahead peak limiter: smooth gain reduction, never above the ceiling."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(x), 1e-9))
    window = max(1, int(0.005 * rate))
    gain = uniform_filter1d(minimum_filter1d(need, size=2 * window + 1), size=window)
    return np.asarray(x * np.minimum(gain, need), dtype=np.float32)


def encode(audio: Audio, fmt: str, bit_depth: int = 16) -> bytes:
    """The audio as a file of `fmt` (16- or 24-bit WAV/FLAC, MP3, Ogg Opus), in memory; the
    rate must be one the codec takes (`codec_rate`)."""
    container, subtype = file_format(fmt, bit_depth)
    encoded = io.BytesIO()
    clipped = np.clip(audio.samples, -1.0, 1.0)
    sf.write(encoded, clipped, audio.sample_rate, format=container, subtype=subtype)
    return encoded.getvalue()


def file_format(fmt: str, bit_depth: int = 16) -> tuple[str, str]:
    """soundfile's container and subtype for an output format (24-bit WAV and FLAC)."""
    codec = CODECS[fmt]
    assert codec.container is not None and codec.subtype is not None, f"{fmt}: not a file format"
    if bit_depth == 24 and fmt in ("wav", "flac"):
        return codec.container, "PCM_24"
    return codec.container, codec.subtype


def write_audio(
    audio: Audio, path: Path, fmt: str, bit_depth: int = 16, chunk: bytes | None = None
) -> None:
    """Write the audio encoded as `fmt` and fsync it; never overwrite.

    Outputs are written into the job's private staging folder, which is
    published by one rename after its report: no reader sees a partial file,
    so no per-file temp name is needed. The file is encoded in memory first:
    libsndfile writing through a Python file object reports a full disk from
    inside a cffi callback, where the error is printed (not JSON) and lost;
    a plain write raises OSError, which the job reports as transient.
    """
    encoded = encode(audio, fmt, bit_depth)
    if chunk is not None:  # a broadcast WAV's bext (deliverables.py)
        from voicedrop.pipeline.deliverables import with_bext

        encoded = with_bext(encoded, chunk)
    try:
        with path.open("xb") as fh:
            fh.write(encoded)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        path.unlink(missing_ok=True)  # no partial file is left behind
        raise


def warm() -> None:
    """Run the post stage's work once on a second of silence (resample, loudness, encode):
    its libraries do their first-time work at start-up, not in a client's first job."""
    audio = Audio(np.zeros(22050, np.float32), 22050)
    loudness_lufs(resample(audio, 24000))
    encode(resample(audio, 24000), "wav")
