"""Deliverables for the timeline: clips named by a template, 24-bit broadcast WAV whose bext
chunk places each clip at its cue, the subtitles as spoken and a cue sheet."""

from __future__ import annotations

import csv
import io
import json
import struct

import pytest
import soundfile as sf

from tests.conftest import drop, read_report, unit_service
from voicedrop.errors import ManifestError
from voicedrop.manifest import parse_manifest
from voicedrop.pipeline.deliverables import with_bext
from voicedrop.script import parse_script

SRT = """1
00:00:01,000 --> 00:00:03,000
Olá, boa tarde.

2
00:00:04,000 --> 00:00:04,300
This line is far too long for its tiny slot of three tenths.
"""


def chunks(data: bytes) -> dict[bytes, bytes]:
    found, at = {}, 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        found[kind] = data[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)
    return found


@pytest.fixture
def delivered(settings):
    service = unit_service(settings)
    drop(service.spool.inbox, "ep.srt", SRT)
    manifest = {
        "script": "ep.srt",
        "tts": {"engine": "espeak", "voice": "narrator"},
        "output": {"template": "{job}_{cue}_{voice}_take{take}", "bit_depth": 24, "bext": True,
                   "sample_rate": 48000, "fit": True},
    }  # fmt: skip
    drop(service.spool.inbox, "ep1.json", manifest)
    service.executor.step()
    folder = service.spool.outbox / "ep1"
    return folder, read_report(folder)


def test_clips_are_named_by_the_template_in_24_bit(delivered):
    folder, report = delivered
    clips = [o["file"] for o in report["outputs"] if o["segment"] != "dub"]
    assert clips == ["ep1_0001_narrator_take1.wav", "ep1_0002_narrator_take1.wav"]
    assert sf.info(str(folder / clips[0])).subtype == "PCM_24"


def test_each_clip_carries_a_bext_chunk_that_places_it_at_its_cue(delivered):
    folder, _ = delivered
    for name, start_s, line in (
        ("ep1_0001_narrator_take1.wav", 1.0, b"Ola, boa tarde."),
        ("ep1_0002_narrator_take1.wav", 4.0, b"This line is far too long"),
    ):
        data = (folder / name).read_bytes()
        bext = chunks(data)[b"bext"]
        assert bext[:256].rstrip(b"\0").startswith(line)  # the line, in ASCII
        assert bext[256:288].rstrip(b"\0") == b"voicedrop"
        assert bext[288:320].rstrip(b"\0") == b"ep1"
        low, high = struct.unpack("<II", bext[338:346])
        assert low + (high << 32) == round(start_s * 48000)
        assert sf.info(str(folder / name)).frames > 0  # still a WAV every reader takes


def test_paragraphs_of_plain_text_are_placed_one_after_another(settings):
    """A .txt has no times: its clips do not all stack at 00:00 in the editor's timeline,
    each begins half a second after the one before ends (the bext time reference)."""
    service = unit_service(settings)
    text = "The first paragraph.\n\nThe second, a little longer.\n\nThe third.\n"
    drop(service.spool.inbox, "notes.txt", text)
    manifest = {"script": "notes.txt", "tts": {"engine": "espeak", "voice": "narrator"},
                "output": {"bext": True, "sample_rate": 48000}}  # fmt: skip
    drop(service.spool.inbox, "notes.json", manifest)
    assert service.executor.step().status == "done"
    folder = service.spool.outbox / "notes"
    placed, expected = [], 0
    for output in read_report(folder)["outputs"]:
        data = (folder / output["file"]).read_bytes()
        low, high = struct.unpack("<II", chunks(data)[b"bext"][338:346])
        placed.append(low + (high << 32))
        assert placed[-1] == expected
        expected += sf.info(str(folder / output["file"])).frames + round(0.5 * 48000)
    assert len(placed) == 3 and placed[0] == 0 < placed[1] < placed[2]


def test_the_subtitles_as_spoken_and_the_cue_sheet(delivered):
    folder, report = delivered
    script = report["script"]
    spoken = parse_script(
        (folder / script["subtitles"]).read_bytes(), "x.srt", max_cue_s=60, max_chars=5000
    )
    clips = {o["segment"]: o for o in report["outputs"]}
    rows = {
        r["cue"]: r for r in csv.DictReader(io.StringIO((folder / script["cue_sheet"]).read_text()))
    }
    for cue in spoken.cues:  # with fit, the clip itself is stretched: every file agrees
        clip = clips[cue.id]
        frames = sf.info(str(folder / clip["file"])).frames
        sheet = float(rows[str(cue.number)]["end"]) - float(rows[str(cue.number)]["start"])
        for length in (cue.end_s - cue.start_s, sheet, clip["duration_s"]):
            assert length == pytest.approx(frames / 48000, abs=0.002), cue.id
    assert [o["stretch"] for o in script["overruns"]] == [1.25]  # cue 2: at most 1.25x
    assert [c.start_s for c in spoken.cues] == [1.0, 4.0]
    rows = list(csv.DictReader(io.StringIO((folder / script["cue_sheet"]).read_text())))
    assert [(r["cue"], r["start"], r["file"], r["take"]) for r in rows] == [
        ("1", "1.000", "ep1_0001_narrator_take1.wav", "1"),
        ("2", "4.000", "ep1_0002_narrator_take1.wav", "1"),
    ]


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ({"template": "{job}_{cue}_{mood}"}, "unknown field {mood}"),
        ({"template": "{job}"}, "use {segment} or {cue}"),
        ({"template": "../{cue}"}, "a template is a file name"),
        ({"format": "mp3", "bit_depth": 24}, "bit_depth 24 is for wav and flac"),
        ({"format": "flac", "bext": True}, "bext is a chunk of WAV files"),
    ],
)
def test_output_settings_that_cannot_be_met_are_refused(output, said):
    raw = {"text": "x", "tts": {"engine": "espeak"}, "output": output}
    with pytest.raises(ManifestError) as err:
        parse_manifest(json.dumps(raw).encode(), max_bytes=65536, max_text_chars=99)
    assert said in err.value.message and err.value.field.startswith("output")


def test_a_bext_chunk_goes_only_into_a_wav_file():
    with pytest.raises(ValueError):
        with_bext(b"fLaC" + b"\0" * 40, b"bext")
