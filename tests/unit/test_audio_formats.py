"""Output encodings: lossy codecs take only their own sample rates."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from voicedrop.codecs import codec_rate
from voicedrop.pipeline.audio import Audio, encode, resample


@pytest.mark.parametrize(
    ("fmt", "rate", "expected"),
    [("mp3", 40000, 44100), ("opus", 22050, 24000), ("opus", 44100, 48000), ("flac", 40000, 40000)],
)
def test_a_rate_the_codec_does_not_take_becomes_the_next_one_up(fmt, rate, expected):
    assert codec_rate(fmt, rate) == expected
    t = np.arange(rate) / rate
    audio = resample(Audio((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate), expected)
    samples, got = sf.read(io.BytesIO(encode(audio, fmt)))
    assert got == expected and abs(len(samples) / got - 1.0) < 0.1
    assert np.sqrt(np.mean(samples**2)) > 0.2  # a tone, not silence
