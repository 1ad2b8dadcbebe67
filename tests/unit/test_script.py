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
        ("cue0003", 6.5, 9.0),
    ]
    assert script.cues[0].text == "Hello there."
    assert script.cues[1].text == "A second line of the same cue."
    assert script.skipped == 1  # cue 2 is a music note: nothing to say
    assert script.end_s == 9.0


def test_webvtt_with_identifiers_notes_and_settings():
    script = parse(VTT.replace("intro\n", "NOTE made by hand\n\nintro\n"), "s.vtt")
    assert [(c.number, c.start_s, c.end_s, c.text) for c in script.cues] == [
        (1, 1.25, 2.5, "Hi you"),
        (2, 3.0, 4.0, "Next"),
    ]


@pytest.mark.parametrize("words", ["<i></i>", "\u266a \u266a", "...", "\u266a La la la \u266a"])
def test_a_cue_without_words_is_skipped_and_counted(words):
    script = parse(
        f"1\n00:00:01,000 --> 00:00:02,000\n{words}\n\n2\n00:00:03,000 --> 00:00:04,000\nYes\n"
    )
    if "La" in words:  # words between the notes: spoken
        assert [c.number for c in script.cues] == [1, 2]
    else:
        assert [c.number for c in script.cues] == [2] and script.skipped == 1


GOOD = "1\n00:00:01,000 --> 00:00:02,000\nGood morning.\n\n"


@pytest.mark.parametrize(
    ("rest", "said"),
    [
        # a cue that lost its timing line: never folded into cue 1 and its number read
        (
            "2\nBack to the story.\n",
            "cue 2 (line 6): found 'Back to the story.' where its timing belongs",
        ),
        # a non-numeric index: never spoken
        (
            "two\n00:00:03,000 --> 00:00:04,000\nBack.\n",
            "line 5 (after cue 1): a cue starts with its number, found 'two'",
        ),
        (
            "00:00:03,000 --> 00:00:04,000\nBack.\n",
            "line 5 (after cue 1): a cue without its number",
        ),
        ("2\n00:00:03,000 -> 00:00:04,000\nBack.\n", "the arrow between the times is '-->'"),
        ("2\n00:14,000 --> 00:16,000\nBack.\n", "'00:14,000' has no hours: write 00:00:14,000"),
        ("2\n00:00:03,0000 --> 00:00:04,000\nBack.\n", "milliseconds take three digits"),
        ("2\n00:75:00,000 --> 00:76:00,000\nBack.\n", "minutes and seconds run from 00 to 59"),
        ("1\n00:00:03,000 --> 00:00:04,000\nAgain.\n", "line 5: cue 1 again"),
        ("2\n", "cue 2 (line 5): no timing line after its number"),
        (
            "2\n00:00:03,000 --> 00:00:04,000\nBack.\n\nAnd a stray line.\n",
            "line 9 (after cue 2): a cue starts with its number",
        ),
    ],
)
def test_what_cannot_be_read_exactly_is_refused_naming_the_cue_and_line(rest, said):
    assert said in problem(GOOD + rest)


def test_malformed_webvtt_cues_are_named():
    bad = VTT.replace("00:00:03.000 -->", "00:00:3.000 -->")
    assert problem(bad, "s.vtt").startswith("cue 2 (line 7): timing '00:00:3.000 --> 00:00:04.000'")
    assert "cue 2 (line 7): no timing line" in problem(
        VTT.replace("00:00:03.000 --> 00:00:04.000\n", ""), "s.vtt"
    )
    assert problem("1\n00:00:01.000 --> 00:00:02.000\nHi\n", "s.vtt").startswith(
        "not a WebVTT file"
    )


def test_overlaps_backwards_and_overlong_cues_are_refused_naming_the_cue():
    overlap = SRT.replace("00:00:06,500 --> 00:00:09,000", "00:00:05,000 --> 00:00:09,000")
    assert problem(overlap) == (  # cue 2 has no words: it is checked all the same
        "cue 3 (at 00:00:05.000, line 10) overlaps cue 2 (at 00:00:04.000), which ends at "
        "00:00:06.000"
    )
    backwards = SRT.replace("00:00:06,500 --> 00:00:09,000", "00:00:09,500 --> 00:00:09,000")
    assert "cue 3 (at 00:00:09.500, line 10) ends at 00:00:09.000" in problem(backwards)
    assert "cue 1 (at 00:00:01.000, line 2) lasts 2.5 s; the limit is 2 s" in problem(
        SRT, max_cue_s=2
    )


def test_a_file_that_is_not_utf8_or_has_no_words():
    assert problem("1\n00:00:01,000 --> 00:00:02,000\ncaf\u00e9\n".encode("latin-1")).startswith(
        "not UTF-8"
    )
    assert problem("1\n00:00:01,000 --> 00:00:02,000\n<b></b>\n") == (
        "the script has no cue with words to say"
    )


def test_plain_text_is_a_cue_per_paragraph_without_times():
    script = parse("Line one\nstill one.\n\n\nTwo.\n", "s.txt")
    assert [(c.id, c.text) for c in script.cues] == [
        ("para0001", "Line one still one."),
        ("para0002", "Two."),
    ]
    assert not script.timed and script.kind == "txt"
    assert "paragraph 2 (line 3)" in problem("One.\n\nbad\x00text\n", "s.txt")
