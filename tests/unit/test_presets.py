"""Hot folders with presets: a subtitle file or plain text saved into inbox/<preset>/ is a
job, with the preset's engine, voice and output, and no JSON written by anyone."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.conftest import make_settings, read_report, unit_service
from voicedrop.daemon.service import Service
from voicedrop.errors import ConfigError

PRESETS = {
    "dub-en": {
        "tts": {"engine": "espeak", "voice": "narrator"},
        "output": {"format": "flac", "name": "ep"},
    }
}
SRT = (
    "1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,000 --> 00:00:05,000\nBye now.\n"
)


@pytest.fixture
def hot(tmp_path):
    service = unit_service(make_settings(tmp_path, presets=PRESETS))
    service.presets.ensure()
    return service


def test_a_subtitle_file_saved_into_a_preset_folder_is_dubbed_with_the_preset(hot):
    (hot.spool.inbox / "dub-en" / "episode 12.srt").write_text(SRT)
    assert hot.presets.collect() == 1
    assert not list((hot.spool.inbox / "dub-en").iterdir())
    report = hot.executor.step()
    assert report.job_id == "episode_12" and report.status == "done"
    saved = read_report(hot.spool.outbox / "episode_12")
    assert saved["manifest"]["tts"]["voice"] == "narrator"
    assert saved["script"]["dub"] == "ep-dub.flac" and saved["script"]["cues"] == 2
    assert not list((hot.spool.inbox / "refs").iterdir())  # the job has its copy


def test_plain_text_becomes_a_clip_per_paragraph(hot):
    text = "The first paragraph,\nover two lines.\n\nThe second one.\n\n\nThe third.\n"
    (hot.spool.inbox / "dub-en" / "chapter.txt").write_text(text)
    hot.presets.collect()
    report = read_report(hot.spool.outbox / hot.executor.step().job_id)
    assert [o["segment"] for o in report["outputs"]] == ["para0001", "para0002", "para0003"]
    assert report["manifest"]["script"].endswith("-chapter.txt")
    assert report["script"] is None  # no times: no dub track


def test_a_file_of_another_kind_is_named_once_and_left(hot):
    stray = hot.spool.inbox / "dub-en" / "notes.docx"
    stray.write_bytes(b"PK")
    with capture_logs() as logs:
        assert hot.presets.collect() == 0
        assert hot.presets.collect() == 0
    assert [e["event"] for e in logs].count("preset.ignored") == 1 and stray.exists()


@pytest.mark.parametrize(
    ("preset", "said"),
    [
        ({"tts": {"engine": "espeak"}, "output": {"format": "wma"}}, "output.format"),
        ({"tts": {"engine": "espeak"}, "text": "Hi"}, "text comes from the file"),
        ({"output": {"format": "wav"}}, "tts"),
    ],
)
def test_a_bad_preset_stops_start_up_naming_it(tmp_path, preset, said):
    with pytest.raises(ConfigError) as err:
        Service(make_settings(tmp_path, presets={"bad": preset}))
    assert "presets.bad" in err.value.message and said in err.value.message
