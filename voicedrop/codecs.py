"""The audio formats voicedrop writes and serves: one table for both, and 16-bit PCM.

A job writes its outputs as files (pipeline/audio.py: wav, flac, mp3, opus through
libsndfile); the HTTP side encodes the same formats as streams while a job is made, plus
raw `pcm` and `aac` (api/encode.py). MP3 and Opus take only a few sample rates: audio at
another rate is encoded at the next rate up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Codec:
    media_type: str
    container: str | None = None  # libsndfile's major format; None: not through libsndfile
    subtype: str | None = None
    rates: tuple[int, ...] | None = None  # the sample rates it takes; None: any


MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
CODECS: dict[str, Codec] = {
    "wav": Codec("audio/wav", "WAV", "PCM_16"),
    "flac": Codec("audio/flac", "FLAC", "PCM_16"),
    "mp3": Codec("audio/mpeg", "MP3", "MPEG_LAYER_III", MP3_RATES),
    "opus": Codec("audio/ogg", "OGG", "OPUS", OPUS_RATES),
    "pcm": Codec("audio/pcm"),  # raw 16-bit little-endian mono: the HTTP side only
    "aac": Codec("audio/aac", rates=AAC_RATES),  # ADTS, through PyAV: the HTTP side only
}
FILE_FORMATS = ("wav", "flac", "mp3", "opus")  # what a job's outputs may be


def codec_rate(fmt: str, rate: int) -> int:
    """The rate to encode `fmt` at: `rate` where the codec takes it, else the next one up
    (RVC's 40 kHz becomes 44.1 kHz in MP3, 48 kHz in Opus)."""
    rates = CODECS[fmt].rates
    if rates is None or rate in rates:
        return rate
    return next((r for r in rates if r > rate), rates[-1])


def to_int16(samples: np.ndarray[Any, Any]) -> bytes:
    """Float samples (-1..1) as 16-bit little-endian PCM, exactly as libsndfile writes
    them into a 16-bit file: a live stream and the job's WAV output hold the same bytes."""
    scaled = np.floor(np.asarray(samples, dtype=np.float32) * np.float32(32768.0))
    return bytes(np.clip(scaled, -32768, 32767).astype("<i2").tobytes())
