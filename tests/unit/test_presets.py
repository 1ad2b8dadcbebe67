"""Hot folders with presets: a subtitle file or plain text saved into inbox/<preset>/ is a
job, with the preset's engine, voice and output, and no JSON written by anyone."""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import time
from unittest.mock import patch

import pytest
import soundfile as sf
from structlog.testing import capture_logs

from tests.conftest import make_settings, read_report, unit_service
from voicedrop.daemon.service import Service
from voicedrop.errors import ConfigError
from voicedrop.fsutil import HOST_TAG

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


@pytest.mark.parametrize(
    ("preset", "said"),
    [
        ({"tts": {"engine": "nope"}}, "tts.engine"),
        ({"tts": {"engine": "espeak", "voice": "nobody"}}, "tts.voice"),
        (
            {"tts": {"engine": "espeak"}, "convert": {"engine": "tape", "model": "nope"}},
            "convert.model",
        ),
    ],
)
def test_a_preset_this_configuration_cannot_run_stops_start_up(tmp_path, preset, said):
    """Valid as a manifest, but naming what the configuration does not have: refused at
    start, not by the first file an editor saves into its folder."""
    with pytest.raises(ConfigError) as err:
        Service(make_settings(tmp_path, presets={"dub": preset}))
    assert "presets.dub" in err.value.message and said in err.value.message, err.value.message


def test_a_preset_that_fits_clips_needs_its_library_at_start(tmp_path):
    preset = {"tts": {"engine": "espeak"}, "output": {"fit": True}}
    real = importlib.util.find_spec
    missing = lambda name, *a: None if name == "librosa" else real(name, *a)  # noqa: E731
    with patch("importlib.util.find_spec", missing), pytest.raises(ConfigError) as err:
        Service(make_settings(tmp_path, presets={"dub": preset}))
    assert "output.fit" in err.value.message and "librosa" in err.value.message


def test_a_presets_clips_are_48_khz_24_bit_unless_it_says_otherwise(tmp_path):
    presets = {
        **PRESETS,  # flac, no rate or depth: an editor's deliverable
        "web": {"tts": {"engine": "espeak"}, "output": {"format": "mp3", "name": "web"}},
        "own": {"tts": {"engine": "espeak"},
                "output": {"sample_rate": 24000, "bit_depth": 16, "name": "own"}},
    }  # fmt: skip
    service = unit_service(make_settings(tmp_path, presets=presets))
    service.presets.ensure()
    for name in presets:
        (service.spool.inbox / name / f"{name}.srt").write_text(SRT)
    assert service.presets.collect() == 3
    formats = {}
    for _ in presets:
        job = service.executor.step().job_id
        clip = next(o for o in read_report(service.spool.outbox / job)["outputs"])
        info = sf.info(str(service.spool.outbox / job / clip["file"]))
        formats[job] = (info.samplerate, info.subtype)
    assert formats["dub-en"] == (48000, "PCM_24")
    assert formats["web"][0] == 48000  # mp3: no bit depth
    assert formats["own"] == (24000, "PCM_16")


def test_a_preset_folder_that_is_a_symlink_is_refused_and_nothing_outside_is_taken(tmp_path):
    """`inbox/ext -> /elsewhere` took a mode-600 secret from outside the spool, spoke it
    into a world-readable WAV and removed it from where it was; nothing was logged."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "secret.txt"
    secret.write_text("the vault code is 1234")
    secret.chmod(0o600)
    settings = make_settings(tmp_path, presets={"ext": PRESETS["dub-en"]})
    service = unit_service(settings)
    (service.spool.inbox / "ext").symlink_to(elsewhere)
    service.presets.ensure()
    with capture_logs() as logs:
        assert service.presets.collect() == 0
        assert service.presets.collect() == 0
    assert secret.read_text() == "the vault code is 1234"
    assert [e["event"] for e in logs].count("preset.refused") == 1
    assert service.executor.step() is None and not list((service.spool.inbox / "refs").iterdir())


def test_a_preset_folder_swapped_for_a_symlink_while_running_is_refused(hot, tmp_path):
    folder = hot.spool.inbox / "dub-en"
    (folder / "one.srt").write_text(SRT)
    assert hot.presets.collect() == 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "two.srt").write_text(SRT)
    folder.rmdir()
    folder.symlink_to(elsewhere)
    assert hot.presets.collect() == 0 and (elsewhere / "two.srt").exists()


def test_a_file_in_the_folder_that_is_a_symlink_is_not_followed(hot, tmp_path):
    outside = tmp_path / "outside.srt"
    outside.write_text(SRT)
    (hot.spool.inbox / "dub-en" / "link.srt").symlink_to(outside)
    assert hot.presets.collect() == 0 and outside.read_text() == SRT


def test_a_full_disk_leaves_the_file_where_it_was_and_it_is_taken_when_space_returns(
    hot, monkeypatch
):
    """The file was renamed into refs/, writing its manifest failed (ENOSPC), and it sat
    there for good: no job, no report, not even after a restart."""
    saved = hot.spool.inbox / "dub-en" / "ep.srt"
    saved.write_text(SRT)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("voicedrop.daemon.presets.write_atomic", full)
        assert hot.presets.collect() == 0
    assert saved.read_text() == SRT and not list((hot.spool.inbox / "refs").iterdir())
    assert hot.presets.collect() == 1  # space is back
    assert hot.executor.step().status == "done"


def test_a_take_a_killed_daemon_left_half_done_becomes_its_job(hot):
    """Killed between moving the file into refs/ and publishing its manifest: the intent
    it wrote first is finished by the next daemon, so the file becomes its job."""
    (hot.spool.inbox / "dub-en" / "ep.srt").write_text(SRT)
    pid = _dead_pid()
    with patch("voicedrop.daemon.presets.Presets._publish", return_value=None):
        assert hot.presets.collect() == 0  # moved, never published: the kill
    [intent] = hot.spool.incoming.glob(".preset-*.intent")
    intent.rename(intent.with_name(intent.name.replace(f".{os.getpid()}-", f".{pid}-")))
    assert len(list((hot.spool.inbox / "refs").iterdir())) == 1
    restarted = unit_service(hot.settings)
    with restarted:  # its start finishes the take
        assert restarted.presets.collect() == 0  # nothing new: finished, not redone
        report = restarted.executor.step()
    assert report.job_id == "ep" and report.status == "done"
    assert not list(hot.spool.incoming.glob(".preset-*"))
    assert not list((hot.spool.inbox / "refs").iterdir())


def test_an_intent_whose_file_never_moved_is_dropped_and_the_file_taken_once(hot):
    (hot.spool.inbox / "dub-en" / "ep.srt").write_text(SRT)
    pid = _dead_pid()
    stale = hot.spool.incoming / f".preset-abcd1234-ep.srt.{pid}-{HOST_TAG}.intent"
    stale.write_text("{}")
    with hot:  # at start
        assert not stale.exists()
    assert hot.presets.collect() == 1
    assert hot.executor.step().status == "done"
    assert hot.executor.step() is None


def test_a_file_still_open_for_writing_is_not_taken_whatever_its_mtime(hot):
    """An .srt written in place in chunks with pauses longer than stable_delay_s, kept
    open, was taken after the first pause: 'done' with 5 of 40 cues, the rest deleted."""
    path = hot.spool.inbox / "dub-en" / "slow.srt"
    with path.open("w") as writer:
        writer.write(SRT.split("\n\n")[0] + "\n\n")
        writer.flush()
        os.utime(path, (time.time() - 60, time.time() - 60))  # quiet, by its mtime
        assert hot.presets.collect() == 0, "taken while its writer still had it open"
        writer.write(SRT.split("\n\n")[1] + "\n")
    assert hot.presets.collect() == 1
    report = read_report(hot.spool.outbox / hot.executor.step().job_id)
    assert report["script"]["cues"] == 2


def test_a_reload_uses_a_changed_preset_and_makes_a_new_presets_folder(tmp_path):
    """A reload said `service.reloaded` but kept the old [presets] and [notify]."""
    settings = make_settings(tmp_path, presets=PRESETS)
    changed = {**PRESETS["dub-en"], "output": {"format": "wav", "name": "ep"}}
    reloaded = make_settings(tmp_path, presets={"dub-en": changed, "dub-pt": changed})
    service = unit_service(settings, load=lambda: reloaded)
    service.presets.ensure()
    service.reload()
    assert (service.spool.inbox / "dub-pt").is_dir()
    (service.spool.inbox / "dub-en" / "ep.srt").write_text(SRT)
    service.presets.collect()
    report = read_report(service.spool.outbox / service.executor.step().job_id)
    assert report["script"]["dub"] == "ep-dub.wav"


def test_every_section_of_the_configuration_is_applied_on_reload_or_refused_by_name():
    """So that no section can be forgotten again: a new one must be placed."""
    from voicedrop.config import Settings
    from voicedrop.daemon.sections import APPLIED_ON_RELOAD, HTTP_SIDE, RESTART_TO_CHANGE

    placed = APPLIED_ON_RELOAD | RESTART_TO_CHANGE | HTTP_SIDE
    assert placed == set(Settings.model_fields)
    assert not (APPLIED_ON_RELOAD & RESTART_TO_CHANGE)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_file_still_settling_keeps_the_loop_looking_until_it_is_taken(tmp_path):
    """A file moved in from a folder nobody watches gives no close event: it is complete
    by its quiet mtime, and the loop must look again then, not at its next scan (10 s)."""
    settings = make_settings(tmp_path, presets=PRESETS, watcher={"stable_delay_s": 2.0})
    service = unit_service(settings)
    service.presets.ensure()
    (service.spool.inbox / "dub-en" / "ep.srt").write_text(SRT)
    assert service.presets.collect() == 0 and service.gate.waiting() == 1
    past = time.time() - 5
    os.utime(service.spool.inbox / "dub-en" / "ep.srt", (past, past))
    assert service.presets.collect() == 1 and service.gate.waiting() == 0


def test_a_manifest_that_could_not_be_published_is_published_at_the_next_collection(
    hot, monkeypatch
):
    (hot.spool.inbox / "dub-en" / "ep.srt").write_text(SRT)
    with monkeypatch.context() as m:
        m.setattr("voicedrop.daemon.presets.os.link", _refused_link)
        assert hot.presets.collect() == 0  # moved into refs/, its manifest not published
    assert not list(hot.spool.inbox.glob("*.json"))
    hot.presets.collect()
    assert [p.name for p in hot.spool.inbox.glob("*.json")] == ["ep.json"]
    assert hot.executor.step().status == "done"


def _refused_link(*_args, **_kwargs):
    raise OSError(errno.EMLINK, "Too many links")
