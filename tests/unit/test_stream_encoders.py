"""Encoders that stream: every format a client may ask for gives bytes after each chunk, and
the whole decodes to the audio that went in (its length, at a rate the codec takes)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from voicedrop.api.encode import encoder, wav_header

RATE = 22050


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def stream(fmt: str, pcm: bytes, chunk: int = 8000) -> tuple[list[bytes], bytes]:
    enc = encoder(fmt, RATE)
    pieces = [enc.add(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    return pieces, b"".join(pieces) + enc.finish()


def decoded_seconds(fmt: str, data: bytes) -> float:
    if fmt == "pcm":
        return len(data) / 2 / RATE
    if fmt == "wav":
        info = sf.info(io.BytesIO(data))
        return info.frames / info.samplerate
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "aac"])
def test_each_format_streams_and_decodes_to_the_same_length(fmt):
    pieces, whole = stream(fmt, tone(3.0))
    assert sum(1 for p in pieces if p) >= len(pieces) - 2  # bytes after (nearly) every chunk
    assert decoded_seconds(fmt, whole) == pytest.approx(3.0, abs=0.08)  # codec padding


def test_flac_comes_whole_with_its_length_so_libsndfile_reads_it():
    pieces, whole = stream("flac", tone(3.0))
    assert not any(pieces)
    data, rate = sf.read(io.BytesIO(whole), dtype="int16")
    assert rate == RATE and data.tobytes() == tone(3.0)  # lossless


def test_streamed_mp3_is_read_whole_by_libsndfile():
    """No frame count at its start that a decoder would trust (libsndfile's own MP3 writer
    leaves one that says the stream ends after its first chunk)."""
    _, whole = stream("mp3", tone(3.0))
    data, rate = sf.read(io.BytesIO(whole))
    assert len(data) / rate == pytest.approx(3.0, abs=0.08)


def test_a_streaming_wav_header_says_the_length_is_unknown():
    _, whole = stream("wav", tone(0.5))
    assert whole[:44] == wav_header(RATE, 0xFFFFFFFF)
    assert len(whole) == 44 + int(0.5 * RATE) * 2
    assert sf.read(io.BytesIO(whole), dtype="int16")[0].tobytes() == tone(0.5)


def test_an_empty_stream_is_still_a_file():
    enc = encoder("wav", RATE)
    assert enc.finish() == wav_header(RATE, 0xFFFFFFFF)
