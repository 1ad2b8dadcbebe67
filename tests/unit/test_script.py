"""Subtitle scripts: good SRT and WebVTT, and each malformed case named by its cue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_settings, read_report, unit_service
from voicedrop.errors import ManifestError
from voicedrop.script import parse_script, read_script, with_cues

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


WINDOWS = (
    "1\n00:00:01,000 --> 00:00:03,000\nCafé au lait, s\u2019il vous plaît — très bien.\n\n"
    "2\n00:00:04,000 --> 00:00:06,000\nNaïve façade, été à Noël.\n"
)


@pytest.mark.parametrize(
    ("encoding", "read_as"),
    [("cp1252", "cp1252"), ("utf-16", "utf-16"), ("utf-8-sig", "utf-8"), ("utf-8", "utf-8")],
)
def test_subtitles_saved_by_windows_tools_are_read_as_written(encoding, read_as):
    """What editors' tools save: Windows-1252, UTF-16 with its byte order mark, UTF-8 with
    or without one — each read to the same words."""
    script = parse(WINDOWS.encode(encoding))
    assert [c.text for c in script.cues] == [
        "Café au lait, s\u2019il vous plaît — très bien.",
        "Naïve façade, été à Noël.",
    ]
    assert script.encoding == read_as


def test_a_file_whose_encoding_cannot_be_told_is_refused_naming_its_cue_and_line():
    cyrillic = "1\n00:00:01,000 --> 00:00:02,000\nHello.\n\n2\n00:00:03,000 --> 00:00:04,000\n"
    said = problem((cyrillic + "Привет, как дела? Всё хорошо, спасибо.\n").encode("cp1251"))
    assert said.startswith("cue 2 (line 7) is not UTF-8") and "save the file as UTF-8" in said


def test_a_file_that_has_no_words():
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


# Subtitles no editor writes: cue numbers of any length and script ('²', Arabic-Indic
# digits, 62 digits), times of any size (a 5,000-digit hours field), arrows and text.
_number = st.one_of(
    st.integers(0, 10**70).map(str),
    st.text(alphabet="0123456789\u00b2\u0663\u096b\uff11", min_size=1, max_size=12),
)
_field = st.one_of(
    st.integers(0, 99).map(lambda n: f"{n:02}"),
    st.sampled_from(["9" * 5000, "1" * 62, "\u00b2\u00b2", "99999", "0"]),
)
_stamp = st.builds(
    lambda h, m, s, ms, sep: f"{h}:{m}:{s}{sep}{ms}",
    _field,
    _field,
    _field,
    st.sampled_from(["000", "500", "5", "12345", "\u0663\u0663\u0663"]),
    st.sampled_from([",", "."]),
)
_cue = st.builds(
    lambda n, a, arrow, b, text: f"{n}\n{a} {arrow} {b}\n{text}\n",
    _number,
    _stamp,
    st.sampled_from(["-->", "->", "--> ", "—>"]),
    _stamp,
    st.text(max_size=30),
)
subtitle_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(_cue, min_size=1, max_size=4).map(lambda cues: "\n".join(cues).encode()),
    st.lists(_cue, min_size=1, max_size=4).map(lambda c: ("WEBVTT\n\n" + "\n".join(c)).encode()),
)


@settings(max_examples=400, deadline=None)
@given(subtitle_bytes, st.sampled_from(["s.srt", "s.vtt", "s.txt"]))
def test_any_bytes_are_a_script_or_a_manifest_error_and_its_cues_make_a_job(raw, name):
    """Never another exception, from the reader or from the job the cues make (a 62-digit
    cue number gave a clip id past its 64 characters: a ValidationError outside the job)."""
    from voicedrop.config import Limits
    from voicedrop.manifest import parse_manifest

    try:
        script = read_script(raw, name, Limits())
    except ManifestError as exc:
        assert exc.field == "script" and exc.message
        return
    raw_manifest = b'{"text": "x", "tts": {"engine": "espeak"}}'
    manifest = parse_manifest(raw_manifest, max_bytes=100, max_text_chars=100)
    assert len(with_cues(manifest, script).segments or []) == len(script.cues)


@pytest.mark.parametrize(
    ("number", "said"),
    [("1" * 62, "nine digits"), ("\u00b2", "nine digits"), ("\u0663", "nine digits")],
)
def test_a_cue_number_no_clip_id_can_carry_is_refused_naming_its_line(number, said):
    message = problem(f"{number}\n00:00:01,000 --> 00:00:02,000\nHi.\n")
    assert "line 1" in message and said in message


def test_a_time_with_thousands_of_digits_is_refused_naming_the_cue():
    message = problem(f"1\n{'9' * 5000}:00:01,000 --> 00:00:02,000\nHi.\n")
    assert message.startswith("cue 1 (line 2)") and "is not a time" in message


def test_a_cue_past_the_longest_timeline_is_refused_before_anything_is_made():
    """A 42-byte file with one cue at 02:00:00 made a two-hour dub track (3.9 GB of
    memory); limits.max_script_s bounds the timeline a script may ask for."""
    text = "1\n20:00:00,000 --> 20:00:01,000\nHi.\n"
    message = problem(text)
    assert "cue 1" in message and "limits.max_script_s" in message
    script = parse_script(text.encode(), "s.srt", max_cue_s=30, max_chars=50, max_end_s=86400)
    assert script.end_s == 72001.0  # a longer limit, when configured


def test_a_script_job_with_a_cue_no_check_foresaw_fails_alone_and_the_next_job_runs(tmp_path):
    service = unit_service(make_settings(tmp_path, presets={"dub": {"tts": {"engine": "noop"}}}))
    service.presets.ensure()
    (service.spool.inbox / "dub" / "bad.srt").write_text(
        f"{'7' * 62}\n00:00:01,000 --> 00:00:02,000\nHi.\n"
    )
    (service.spool.inbox / "dub" / "good.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHi.\n")
    assert service.presets.collect() == 2
    reports = {r.job_id: r for r in iter(service.executor.step, None)}
    assert reports["good"].status == "done"
    failed = read_report(service.spool.failed / "bad")
    assert failed["error"]["field"] == "script" and "line 1" in failed["error"]["message"]
    assert not list((service.spool.inbox / "refs").iterdir())


def test_a_windows_subtitle_file_saved_into_a_hot_folder_is_dubbed_as_written(tmp_path):
    preset = {"tts": {"engine": "espeak", "voice": "narrator"}}
    service = unit_service(make_settings(tmp_path, presets={"dub": preset}))
    service.presets.ensure()
    (service.spool.inbox / "dub" / "ep.srt").write_bytes(WINDOWS.encode("cp1252"))
    assert service.presets.collect() == 1
    assert service.executor.step().status == "done"
    report = read_report(service.spool.outbox / "ep")
    assert report["script"]["encoding"] == "cp1252" and report["script"]["cues"] == 2
    spoken = (service.spool.outbox / "ep" / report["script"]["subtitles"]).read_text()
    assert "Naïve façade, été à Noël." in spoken  # the words as written, now in UTF-8
