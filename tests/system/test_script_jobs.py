"""Script jobs end to end: a subtitle file dropped beside its manifest into a real daemon
becomes one clip per cue and a dub track with each clip at its cue's start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from tests.system.test_daemon import Daemon, done, drop, report

pytestmark = pytest.mark.system
SRT = """1
00:00:00,500 --> 00:00:03,000
Good evening, and welcome.

2
00:00:03,500 --> 00:00:03,900
This sentence is far too long for the moment it was given.

3
00:00:06,000 --> 00:00:08,000
Goodbye.
"""


@pytest.mark.parametrize("fit", [False, True], ids=["as-is", "fit"])
def test_a_script_becomes_clips_and_a_dub_track_with_overruns_reported(tmp_path: Path, fit: bool):
    spool = tmp_path / "spool"
    daemon = Daemon(spool)
    try:
        (spool / "inbox" / "episode.srt").write_text(SRT)
        manifest = {"script": "episode.srt", "tts": {"engine": "espeak"}, "output": {"fit": fit}}
        drop(spool, "episode", manifest)
        daemon.wait_for(lambda: done(spool, "episode"), "the script job", 60)
    finally:
        assert daemon.stop() == 0
    data = report(spool, "outbox", "episode")
    clips = [o for o in data["outputs"] if o["segment"] != "dub"]
    assert [o["file"] for o in clips] == [f"speech-cue000{i}.wav" for i in (1, 2, 3)]
    script = data["script"]
    assert script["cues"] == 3 and script["dub"] == "speech-dub.wav"
    audio, rate = sf.read(spool / "outbox" / "episode" / "speech-dub.wav")
    last = clips[-1]["duration_s"]
    assert abs(len(audio) / rate - max(8.0, 6.0 + last)) < 0.01  # as long as the script
    start = int(0.5 * rate)
    assert abs(audio[: start - 10]).max() < 1e-4 and abs(audio[start : start + rate]).max() > 0.01
    [overrun] = script["overruns"]  # cue 2 has 0.4 s for a long sentence
    assert overrun["cue"] == 2 and overrun["slot_s"] == 0.4
    assert overrun["over_s"] == pytest.approx(overrun["speech_s"] - 0.4, abs=0.002)
    assert overrun["stretch"] == (1.25 if fit else 1.0)  # limits.max_stretch caps the stretch
    # fitted or not, the clip file is what the dub track holds (fit stretches the clip)
    assert overrun["speech_s"] == pytest.approx(clips[1]["duration_s"], abs=0.002)


def test_a_malformed_script_fails_naming_the_cue(tmp_path: Path):
    spool = tmp_path / "spool"
    daemon = Daemon(spool)
    try:
        bad = SRT.replace("00:00:06,000 --> 00:00:08,000", "00:00:03,700 --> 00:00:08,000")
        (spool / "inbox" / "bad.srt").write_text(bad)
        drop(spool, "bad", {"script": "bad.srt", "tts": {"engine": "espeak"}})
        daemon.wait_for(lambda: (spool / "failed" / "bad" / "report.json").exists(), "failure", 30)
    finally:
        assert daemon.stop() == 0
    error = json.loads((spool / "failed" / "bad" / "report.json").read_text())["error"]
    assert error["field"] == "script" and error["message"].startswith(
        "cue 3 (at 00:00:03.700, line 10) overlaps cue 2"
    )


def test_a_script_saved_into_a_preset_folder_is_dubbed_with_no_manifest(tmp_path: Path):
    """The hot folder, as an editing suite's watch folder uses it: a real daemon with its
    real watcher; the file is written in place and closed (an export), then taken."""
    spool = tmp_path / "spool"
    preset = '{"tts": {"engine": "espeak"}, "output": {"name": "ep", "bext": true}}'
    daemon = Daemon(spool, VOICEDROP_PRESETS=f'{{"dub": {preset}}}')
    try:
        with (spool / "inbox" / "dub" / "episode.srt").open("w") as export:
            export.write(SRT)
        daemon.wait_for(lambda: done(spool, "episode"), "the preset's job", 60)
    finally:
        assert daemon.stop() == 0
    data = report(spool, "outbox", "episode")
    assert data["script"]["dub"] == "ep-dub.wav" and data["script"]["subtitles"] == "ep-spoken.srt"
    assert (spool / "outbox" / "episode" / "ep-cues.csv").exists()
