"""A script's dub track is written block by block: what it holds and measures is what the
whole track would give, and its memory does not grow with the timeline."""

from __future__ import annotations

import errno
import tracemalloc
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from voicedrop.pipeline.longtrack import LoudnessMeter, placed_blocks, write_blocks


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.45, 1.08, 3.3, 7.0])
def test_the_meter_block_by_block_gives_pyloudnorms_figure_for_the_whole(rate, seconds):
    rng = np.random.default_rng(rate + int(seconds * 100))
    signal = (rng.standard_normal(int(rate * seconds)) * 0.1).astype(np.float32)
    signal[: len(signal) // 3] *= 0.001  # quiet stretches: the gates have work to do
    whole = pyloudnorm.Meter(rate).integrated_loudness(signal)
    meter = LoudnessMeter(rate)
    cuts = sorted(rng.integers(0, len(signal), 5))
    for part in np.split(signal, cuts):
        meter.add(part)
    assert meter.lufs() == pytest.approx(whole, abs=0.01)


def test_silence_and_too_short_have_no_loudness():
    meter = LoudnessMeter(24000)
    meter.add(np.zeros(24000, np.float32))
    assert meter.lufs() is None
    short = LoudnessMeter(24000)
    short.add(np.full(2400, 0.5, np.float32))
    assert short.lufs() is None


def test_blocks_hold_what_the_whole_track_would():
    rng = np.random.default_rng(7)
    clips = [(int(s), (rng.standard_normal(n) * 0.7).astype(np.float32))
             for s, n in ((0, 5000), (4000, 9000), (70000, 300), (131000, 20000))]  # fmt: skip
    length = 200000
    whole = np.zeros(length, np.float32)
    for start, samples in clips:
        whole[start : start + len(samples)] += samples
    np.clip(whole, -1, 1, out=whole)
    blocks = list(placed_blocks(clips, length, block=4096))
    assert all(len(b) <= 4096 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), whole)


def test_a_two_hour_track_is_written_in_memory_that_does_not_grow_with_it(tmp_path: Path):
    """A 42-byte script with one cue at 02:00:00 took 3.9 GB to make its dub track."""
    rate = 24000
    clip = np.full(rate, 0.25, np.float32)
    length = 2 * 3600 * rate + rate
    tracemalloc.start()
    try:
        written = write_blocks(
            tmp_path / "dub.wav", "wav", rate, placed_blocks([(length - rate, clip)], length)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB for a {length / rate / 3600:.1f} h track"
    info = sf.info(str(tmp_path / "dub.wav"))
    assert info.frames == length and written.duration_s == pytest.approx(7201.0)
    assert written.peak_dbfs == pytest.approx(20 * np.log10(0.25), abs=0.01)
    tail, _ = sf.read(str(tmp_path / "dub.wav"), start=length - rate - 10, dtype="float32")
    assert np.all(tail[:10] == 0) and np.allclose(tail[10:], 0.25, atol=1e-4)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_every_output_format_is_written_block_by_block(tmp_path: Path, fmt):
    rate = 48000 if fmt == "opus" else 24000
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    path = tmp_path / f"dub.{fmt}"
    written = write_blocks(path, fmt, rate, np.split(tone, [1000, 30000, 60001]))
    data, got_rate = sf.read(str(path), dtype="float32")
    assert got_rate == rate and abs(len(data) - len(tone)) < rate // 10
    assert written.loudness_lufs is not None


def test_a_full_disk_fails_the_write_and_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "dub.wav"
    calls = {"n": 0}
    real_write = Path.open

    def full(self, *args, **kwargs):
        fh = real_write(self, *args, **kwargs)

        class Full:
            def __getattr__(self, name):
                return getattr(fh, name)

            def write(self, data):
                calls["n"] += 1
                if calls["n"] > 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return fh.write(data)

        return Full()

    monkeypatch.setattr(Path, "open", full)
    blocks = [np.zeros(65536, np.float32)] * 8
    with pytest.raises(OSError) as err:
        write_blocks(path, "wav", 24000, blocks)
    assert err.value.errno == errno.ENOSPC and not path.exists()
