"""Subtitle scripts: good SRT and WebVTT, and each malformed case named by its cue."""

from __future__ import annotations

import pytest

from voicedrop.errors import ManifestError
from voicedrop.script import parse_script

SRT = """1
00:00:01,000 --> 00:00:03,500
Hello <i>there</i>.

2
00:00:04,000 --> 00:00:06,000
<font color="red">\u266a</font>

3
00:00:06,500 --> 00:00:09,000
A second line
of the same cue.
"""

VTT = """WEBVTT

intro
00:00:01.250 --> 00:00:02.500 align:start
Hi <b>you</b>

00:00:03.000 --> 00:00:04.000
Next
"""


def parse(text: str | bytes, name: str = "s.srt", **limits):
    raw = text.encode() if isinstance(text, str) else text
    return parse_script(raw, name, max_cue_s=limits.get("max_cue_s", 30), max_chars=5000)


def problem(text: str | bytes, name: str = "s.srt", **limits) -> str:
    with pytest.raises(ManifestError) as err:
        parse(text, name, **limits)
    assert err.value.field == "script"
    return err.value.message


def test_srt_cues_become_clips_with_their_times_and_plain_words():
    script = parse(SRT)
    assert [(c.id, c.start_s, c.end_s) for c in script.cues] == [
        ("cue0001", 1.0, 3.5),
        ("cue0002", 4.0, 6.0),
        ("cue0003", 6.5, 9.0),
    ]
    assert script.cues[0].text == "Hello there."
    assert script.cues[2].text == "A second line of the same cue."
    assert script.end_s == 9.0


def test_webvtt_with_identifiers_and_settings():
    script = parse(VTT, "s.vtt")
    assert [(c.start_s, c.end_s, c.text) for c in script.cues] == [
        (1.25, 2.5, "Hi you"),
        (3.0, 4.0, "Next"),
    ]


def test_a_cue_without_words_is_skipped_and_counted():
    script = parse(
        "1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n\n2\n00:00:03,000 --> 00:00:04,000\nYes\n"
    )
    assert [c.number for c in script.cues] == [2] and script.skipped == 1


def test_malformed_cues_are_named():
    broken = SRT.replace("00:00:06,500 --> 00:00:09,000", "00:00:0x,500 --> 00:00:09,000")
    assert "after cue 2" in problem(broken) and "00:00:0x,500" in problem(broken)
    bad_vtt = VTT.replace("00:00:03.000 -->", "00:00:3.000 -->")
    assert problem(bad_vtt, "s.vtt").startswith("cue 2: malformed timing")


def test_overlaps_backwards_and_overlong_cues_are_refused_naming_the_cue():
    overlap = SRT.replace("00:00:04,000 --> 00:00:06,000", "00:00:03,000 --> 00:00:06,000")
    assert problem(overlap) == (
        "cue 2 (at 00:00:03.000) overlaps cue 1 (at 00:00:01.000), which ends at 00:00:03.500"
    )
    backwards = SRT.replace("00:00:06,500 --> 00:00:09,000", "00:00:09,500 --> 00:00:09,000")
    assert "cue 3 (at 00:00:09.500) ends at 00:00:09.000" in problem(backwards)
    assert "cue 1 (at 00:00:01.000) lasts 2.5 s; the limit is 2 s" in problem(SRT, max_cue_s=2)


def test_a_file_that_is_not_utf8_or_has_no_words():
    assert problem("1\n00:00:01,000 --> 00:00:02,000\ncaf\u00e9\n".encode("latin-1")).startswith(
        "not UTF-8"
    )
    assert problem("1\n00:00:01,000 --> 00:00:02,000\n<b></b>\n") == (
        "the script has no cue with words to say"
    )
