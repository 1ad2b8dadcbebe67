"""The clip cache: a segment rendered before is used again — only when nothing that decides
its audio changed, and only for renders that would come out the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import drop, hello, make_settings, read_report, unit_service
from voicedrop.fsutil import temp_path
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.clips import ClipCache

LINES = ["The first line.", "The second line.", "The third line."]


def job(lines=LINES, **extra):
    manifest = hello(segments=[{"id": f"s{i}", "text": t} for i, t in enumerate(lines, 1)])
    del manifest["text"]
    return {**manifest, **extra}


def run(service, name: str, manifest: dict) -> dict:
    drop(service.spool.inbox, f"{name}.json", manifest)
    service.executor.step()
    return read_report(service.spool.outbox / name)


def caches(report: dict) -> list[str | None]:
    return [o.get("cache") for o in report["outputs"]]


def test_only_the_changed_line_is_rendered_again_and_the_rest_is_the_same_audio(settings):
    service = unit_service(settings)
    first = run(service, "first", job())
    assert caches(first) == ["miss", "miss", "miss"] and first["cache"] == {"hit": 0, "miss": 3}
    edited = run(service, "second", job([LINES[0], "A changed second line.", LINES[2]]))
    assert caches(edited) == ["hit", "miss", "hit"] and edited["cache"] == {"hit": 2, "miss": 1}
    for segment in ("s1", "s3"):
        a = sf.read(str(service.spool.outbox / "first" / f"speech-{segment}.wav"))[0]
        b = sf.read(str(service.spool.outbox / "second" / f"speech-{segment}.wav"))[0]
        assert (a == b).all()


def test_anything_that_decides_the_audio_is_part_of_the_key(settings):
    service = unit_service(settings)
    run(service, "base", job())
    changed = {
        "options": job(tts={"engine": "espeak", "language": "en", "options": {"rate": 200}}),
        "voice": job(tts={"engine": "espeak", "voice": "narrator"}),
        "language": job(tts={"engine": "espeak", "language": "pt"}),
        "lexicon": job(pronunciations={"line": "row"}),
        "conversion": job(convert={"engine": "tape", "model": "chipmunk", "pitch": 3}),
    }
    for name, manifest in changed.items():
        assert "hit" not in caches(run(service, name, manifest)), name
    # the output format is not: the post stage runs again on the same takes
    assert caches(run(service, "flac", job(output={"format": "flac"}))) == ["hit"] * 3


def test_the_cache_survives_a_restart_and_a_broken_clip_is_made_again(tmp_path: Path):
    settings = make_settings(tmp_path)
    run(unit_service(settings), "before", job())
    clips = sorted((settings.state_path / "clips").rglob("*.wav"))
    assert len(clips) == 3
    clips[0].write_bytes(b"not a wav file")
    again = run(unit_service(settings), "after", job())
    assert sorted(caches(again)) == ["hit", "hit", "miss"]


def test_renders_that_would_not_come_out_the_same_are_not_cached(tmp_path: Path):
    settings = make_settings(tmp_path)
    service = unit_service(settings)
    engine = service.engines.tts["espeak"]
    engine.deterministic = lambda request: False  # as XTTS without a seed
    report = run(service, "free", job())
    assert caches(report) == [None, None, None] and report["cache"] == {}
    assert not (settings.state_path / "clips").exists()


def test_a_line_said_twice_is_made_once_and_the_first_kept_clip_is_never_replaced(
    settings, tmp_path: Path
):
    """Two cues with the same words share a key: made once, both the same audio, in this
    version and the next; and a clip kept under a key stays the one first kept (an engine
    that differs by a bit on a second render never changes an unchanged cue's audio)."""
    service = unit_service(settings)
    twice = job(["Hello there.", "Something else.", "Hello there."])
    first = run(service, "first", twice)
    assert caches(first) == ["miss", "miss", "hit"] and first["cache"] == {"hit": 1, "miss": 2}
    said = [sf.read(str(service.spool.outbox / "first" / f"speech-s{i}.wav"))[0] for i in (1, 3)]
    assert (said[0] == said[1]).all()
    cache = ClipCache(tmp_path / "clips", 10**9)
    kept = Audio(np.full(2400, 0.25, np.float32), 24000)
    cache.put("k" * 64, kept)
    cache.put("k" * 64, Audio(np.full(2400, 0.5, np.float32), 24000))
    again = cache.get("k" * 64)
    assert again is not None and np.allclose(again.samples, kept.samples, atol=1e-4)


def test_off_when_its_size_is_zero(tmp_path: Path):
    settings = make_settings(tmp_path, cache={"clips_gb": 0})
    service = unit_service(settings)
    assert caches(run(service, "a", job())) == [None] * 3


def test_the_least_recently_used_clips_go_past_the_budget(tmp_path: Path):
    cache = ClipCache(tmp_path / "clips", max_bytes=10**9)
    second = Audio(np.zeros(44100, np.float32), 44100)
    cache.put("a" * 64, second)
    size = next((tmp_path / "clips").rglob("*.wav")).stat().st_size
    cache.max_bytes = int(3.5 * size)  # room for three
    for key in ("b" * 64, "c" * 64):
        cache.put(key, second)
    assert cache.get("a" * 64) is not None  # used: now the most recent
    cache.put("d" * 64, second)
    kept = {p.stem[0] for p in (tmp_path / "clips").rglob("*.wav")}
    assert "b" not in kept and {"a", "d"} <= kept


def test_the_cache_never_takes_the_last_of_its_disk(tmp_path: Path, monkeypatch):
    cache = ClipCache(tmp_path / "clips", max_bytes=10**9)
    usage = __import__("shutil").disk_usage(tmp_path)
    nearly_full = type(usage)(total=10 * 1024**3, used=10 * 1024**3 - 900 * 1024**2,
                              free=900 * 1024**2)  # fmt: skip
    monkeypatch.setattr("voicedrop.pipeline.clips.shutil.disk_usage", lambda _p: nearly_full)
    cache.put("e" * 64, Audio(np.zeros(1000, np.float32), 8000))
    assert cache.get("e" * 64) is None


def test_a_killed_daemons_half_written_clip_is_removed_when_the_next_starts(tmp_path: Path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = tmp_path / "clips"
    ClipCache(folder, max_bytes=10**9).put("f" * 64, Audio(np.zeros(800, np.float32), 8000))
    shard = folder / "ff"
    orphan = temp_path(shard / f"{'a' * 64}.wav", pid=gone.pid)
    live = temp_path(shard / f"{'b' * 64}.wav")  # a writer that still runs
    elsewhere = temp_path(shard / f"{'c' * 64}.wav", pid=gone.pid, host="0123abcd")
    for temp in (orphan, live, elsewhere):
        temp.write_bytes(b"RIFF half a clip")
    cache = ClipCache(folder, max_bytes=10**9)
    assert not orphan.exists() and live.exists()
    assert elsewhere.exists(), "a temp file of a daemon on another host sharing the folder"
    assert cache.get("f" * 64) is not None


def test_a_file_replaced_with_its_size_and_mtime_kept_changes_the_key(tmp_path):
    """`cp -p`, `rsync -a` and `touch -r` give a replaced reference recording or model file
    its old size and mtime: keyed by (path, size, mtime), the old file's clips were served
    for the new one, for as long as the daemon ran."""
    cache = ClipCache(tmp_path / "clips", 10**8)
    ref = tmp_path / "voice.wav"
    rate = 16000
    tone = np.sin(np.arange(rate) * 2 * np.pi * 220 / rate).astype(np.float32) * 0.3
    sf.write(str(ref), tone, rate, subtype="PCM_16")
    parts = {"tts": {"engine": "xtts"}, "text": "Hello."}
    first = cache.key(parts, [ref])
    assert cache.key(parts, [ref]) == first  # the same file: the same clip
    other = tmp_path / "other.wav"
    sf.write(str(other), -tone, rate, subtype="PCM_16")  # another voice, the same size
    before = ref.stat()
    subprocess.run(["cp", "-p", str(other), str(ref)], check=True)  # in place, as rsync -a
    os.utime(ref, ns=(before.st_atime_ns, before.st_mtime_ns))  # its mtime back, to the ns
    after = ref.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert cache.key(parts, [ref]) != first


def test_on_the_device_worker_the_clips_outlive_the_worker(tmp_path: Path):
    """The worker renders; the cache is the daemon's state directory's, so an edit after the
    worker's idle exit (here: after each job) still reuses the unchanged lines."""
    settings = make_settings(tmp_path, residency={"worker": "process", "worker_idle_s": 0})
    service = unit_service(settings)
    with service:
        first = run(service, "first", job())
        edited = run(service, "second", job([LINES[0], "A changed second line.", LINES[2]]))
        starts = service.dispatch.workers()[0]["starts"]
    assert caches(first) == ["miss", "miss", "miss"]
    assert caches(edited) == ["hit", "miss", "hit"] and starts == 2
