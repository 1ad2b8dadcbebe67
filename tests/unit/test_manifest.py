import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import stress
from voicedrop.errors import ManifestError
from voicedrop.manifest import parse_manifest, schema

LIMITS = {"max_bytes": 64 * 1024, "max_text_chars": 100}


def parse(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_manifest(raw, **LIMITS)


def bad(data, field, fragment):
    with pytest.raises(ManifestError) as err:
        parse(data)
    assert err.value.field == field
    assert fragment in err.value.message
    assert err.value.kind == "permanent"
    return err.value


GOOD = {"text": "Hi.", "tts": {"engine": "espeak"}}


def test_minimal_manifest_gets_defaults():
    m = parse(GOOD)
    assert m.output.format == "wav" and m.output.name == "speech"
    assert m.tts.language == "en"
    assert m.items() == [("speech", "Hi.")]


def test_segments_keep_their_ids():
    m = parse(
        {
            "segments": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}],
            "tts": {"engine": "espeak"},
        }
    )
    assert m.items() == [("a", "one"), ("b", "two")]


def test_full_manifest():
    m = parse(
        {
            "id": "client-42",
            "text": "Hi.",
            "tts": {
                "engine": "xtts",
                "voice": "refs/alice.wav",
                "language": "pt-BR",
                "options": {"temperature": 0.7},
            },
            "convert": {"engine": "rvc", "model": "alice", "pitch": -3, "method": "pm"},
            "output": {"format": "flac", "sample_rate": 48000, "loudness_lufs": -16, "name": "x"},
        }
    )
    assert m.tts.reference_path == "refs/alice.wav"
    assert m.convert is not None and m.convert.pitch == -3


def test_malformed_json():
    bad(b'{"text": "Hi", ', None, "malformed JSON")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"text": "x", "output": {"sample_rate": ' + b"9" * 5000 + b"}}", "too many digits"),
        (b'{"text": "x", "tts": {"engine": "espeak", "options": {"rate": NaN}}}', "NaN"),
        (b'{"text": "x", "tts": {"engine": "espeak"}, "output": {"loudness_lufs": -Infinity}}',
         "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["5000-digit integer", "NaN", "Infinity", "nested 100000 deep"],
)  # fmt: skip
def test_json_the_decoder_chokes_on_is_a_manifest_error(raw, fragment):
    """Python's int-string digit limit raised ValueError past the parser: a crash loop."""
    with pytest.raises(ManifestError, match=fragment):
        parse_manifest(raw, max_bytes=len(raw), max_text_chars=100)


def test_a_reference_path_with_a_control_character_is_refused():
    bad({"text": "x", "tts": {"engine": "xtts", "voice": "a\x00b.wav"}}, "tts.voice", "control")


def test_not_an_object():
    bad(b"[1, 2]", None, "JSON object")


def test_unknown_key_names_the_field():
    bad({**GOOD, "colour": "blue"}, "colour", "unknown key")
    bad({**GOOD, "tts": {"engine": "espeak", "speed": 2}}, "tts.speed", "unknown key")


def test_missing_text():
    bad({"tts": {"engine": "espeak"}}, None, "exactly one of 'text', 'segments' or 'script'")


def test_text_and_segments_together():
    bad({**GOOD, "segments": [{"id": "a", "text": "x"}]}, None, "exactly one")


def test_missing_tts():
    bad({"text": "Hi."}, "tts", "required")


def test_text_over_the_limit():
    bad({**GOOD, "text": "x" * 101}, None, "101 characters; the limit is 100")


def test_segments_over_the_limit_together():
    segs = [{"id": f"s{i}", "text": "x" * 40} for i in range(3)]
    bad({"segments": segs, "tts": {"engine": "espeak"}}, None, "the limit is 100")


def test_duplicate_segment_ids():
    segs = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    bad({"segments": segs, "tts": {"engine": "espeak"}}, None, "unique")


@pytest.mark.parametrize("voice", ["/etc/passwd.wav", "C:\\voices\\a.wav"])
def test_absolute_reference_path(voice):
    bad({**GOOD, "tts": {"engine": "xtts", "voice": voice}}, "tts.voice", "relative")


@pytest.mark.parametrize("voice", ["../secret.wav", "refs/../../x.wav", "..\\x.wav"])
def test_reference_path_with_dotdot(voice):
    bad({**GOOD, "tts": {"engine": "xtts", "voice": voice}}, "tts.voice", "'..'")


def test_convert_model_is_a_name_never_a_path():
    bad(
        {**GOOD, "convert": {"engine": "rvc", "model": "../models/x.pth"}},
        "convert.model",
        "must be 1 to 64 letters, digits, '.', '_' or '-'",
    )


def test_output_name_cannot_escape():
    bad({**GOOD, "output": {"name": "../../etc/cron.d/x"}}, "output.name", "letters, digits")
    bad({**GOOD, "tts": {"engine": "espeak", "language": "english!"}}, "tts.language", "'pt-BR'")


def test_output_values_are_range_checked():
    bad({**GOOD, "output": {"sample_rate": 1000}}, "output.sample_rate", "greater than")
    bad({**GOOD, "output": {"format": "aac"}}, "output.format", "'mp3' or 'opus'")
    bad({**GOOD, "output": {"format": "mp3", "sample_rate": 40000}}, "output", "mp3 takes")


def test_non_utf8_file():
    bad('{"text": "caf\u00e9", "tts": {"engine": "espeak"}}'.encode("latin-1"), None, "not UTF-8")


def test_a_manifest_saved_with_a_byte_order_mark_is_read():
    raw = "\ufeff".encode() + json.dumps(GOOD).encode()  # Notepad's "UTF-8 with BOM"
    assert parse_manifest(raw, max_bytes=len(raw), max_text_chars=100).text == GOOD["text"]


def test_a_key_given_twice_is_refused_not_silently_the_last():
    bad(
        b'{"text": "Meant.", "text": "Left over.", "tts": {"engine": "espeak"}}',
        None,
        "'text' appears twice",
    )
    bad(b'{"text": "x", "tts": {"engine": "espeak", "voice": "a", "voice": "b"}}', None,
        "'voice' appears twice")  # fmt: skip


def test_manifest_over_64_kib():
    big = json.dumps({**GOOD, "text": "x" * (64 * 1024)}).encode()
    bad(big, None, "the limit is 65536")


def test_every_problem_is_kept_for_validate():
    err = bad({"text": "Hi.", "tts": {"engine": ""}, "extra": 1}, "tts.engine", "and 1 more")
    assert len(err.problems) == 2
    assert any(p.startswith("extra: unknown key") for p in err.problems)


def test_schema_describes_the_manifest():
    s = schema()
    assert set(s["properties"]) >= {"text", "segments", "tts", "convert", "output", "id"}
    assert s["additionalProperties"] is False


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"text": "Hello\x00 and the rest"}, "text", "control character U+0000 at position 5"),
        ({"text": " \n\t "}, "text", "only whitespace"),
        ({"segments": [{"id": "a", "text": "bell\x07"}]}, "segments.0.text", "U+0007"),
        ({"text": "x\x1b[31m"}, "text", "U+001B"),
    ],
)
def test_text_an_engine_cannot_say_is_refused_naming_the_field(data, field, fragment):
    raw = json.dumps({**data, "tts": {"engine": "espeak"}}).encode()
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw, max_bytes=65536, max_text_chars=5000)
    assert err.value.field == field and fragment in err.value.message


def test_tabs_and_newlines_are_speakable():
    raw = json.dumps({"text": "One.\n\tTwo.\r\n", "tts": {"engine": "espeak"}}).encode()
    assert parse_manifest(raw, max_bytes=65536, max_text_chars=5000).text == "One.\n\tTwo.\r\n"


# ---- property: whatever arrives, the parser answers with a ManifestError or a Manifest ----


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
near_manifests = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values,
        "segments": json_values,
        "tts": st.fixed_dictionaries(
            {}, optional={"engine": json_values, "voice": json_values, "language": json_values}
        )
        | json_values,
        "convert": json_values,
        "output": json_values,
        "id": json_values,
        "version": json_values,
    },
)


# JSON text json.dumps never writes but a producer may: numbers past the digit limit,
# NaN and Infinity, nesting past the recursion limit, stray bytes
hostile_json = st.one_of(
    st.integers(4301, 6000).map(lambda n: b'{"text": "x", "id": ' + b"7" * n + b"}"),
    st.sampled_from([b"NaN", b"-Infinity", b'{"a": Infinity}', b"1e99999", b"-0"]),
    st.integers(900, 30_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(900, 30_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


@settings(max_examples=stress(400), deadline=None)
@given(
    st.binary(max_size=300) | near_manifests.map(lambda d: json.dumps(d).encode()) | hostile_json
)
def test_no_input_raises_anything_but_a_manifest_error(raw):
    try:
        manifest = parse_manifest(raw, max_bytes=len(raw) + 65536, max_text_chars=5000)
    except ManifestError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert exc.kind == "permanent"
    else:
        assert manifest.items()  # a manifest that parses has something to say
