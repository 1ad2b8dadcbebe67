"""The pronunciation lexicon: whole words, the case rule, the job's entries over the
configuration's, and a report of what was said another way."""

from __future__ import annotations

import json

import pytest

from tests.conftest import drop, hello, make_settings, read_report, unit_service
from voicedrop.errors import ManifestError
from voicedrop.manifest import parse_manifest
from voicedrop.pipeline.text import Lexicon

TABLES = {"en": {"NAS": "network attached storage", "voicedrop": "voice drop"},
          "en-GB": {"GPU": "graphics unit"}, "pt": {"GPU": "gê pê u"}}  # fmt: skip


def test_whole_words_and_the_case_rule():
    lexicon = Lexicon.of(TABLES, "en", {})
    said = lexicon.apply("The NAS, the nas, NASA and Voicedrop's voicedrop.")
    assert said == "The network attached storage, the nas, NASA and voice drop's voice drop."
    assert lexicon.used() == [
        ("NAS", "network attached storage", 1),
        ("voicedrop", "voice drop", 2),
    ]


@pytest.mark.parametrize(
    ("entries", "text", "said"),
    [
        ({"izmir": "IZ-meer"}, "İzmir, Izmir, izmir", "IZ-meer, IZ-meer, IZ-meer"),  # Turkish İ
        ({"straße": "SHTRAH-seh"}, "STRAẞE und Straße", "SHTRAH-seh und SHTRAH-seh"),
        ({"nas": "N. A. S."}, "na" + chr(0x17F), "N. A. S."),  # a long s matches s in any case
        ({"NAS": "network storage", "nas": "nahs"}, "NAS nas Nas", "network storage nahs nahs"),
    ],
)
def test_unicode_case_is_matched_and_respelled_never_raised(entries, text, said):
    """The regex engine's case folding matched 'İzmir' for 'izmir', then the entry was
    looked up by str.lower(), which gives 'i̇zmir': KeyError, the job an internal error."""
    lexicon = Lexicon(entries)
    assert lexicon.apply(text) == said


def test_the_language_and_the_job_decide_which_entries_apply():
    assert Lexicon.of(TABLES, "en-GB", {}).apply("GPU on NAS") == (
        "graphics unit on network attached storage"
    )
    assert Lexicon.of(TABLES, "en-US", {}).apply("GPU") == "GPU"
    job = Lexicon.of(TABLES, "en-GB", {"GPU": "graphics processor", "GPU farm": "render farm"})
    assert job.apply("A GPU farm, one GPU.") == "A render farm, one graphics processor."


def test_a_replacement_is_never_replaced_again():
    lexicon = Lexicon({"A": "B", "B": "C"})
    assert lexicon.apply("A B") == "B C"


@pytest.mark.parametrize("entries", [{"": "x"}, {" GPU": "x"}, {"GPU": "a\x00b"}])
def test_bad_entries_in_a_manifest_name_the_field(entries):
    raw = json.dumps({"text": "x", "tts": {"engine": "espeak"}, "pronunciations": entries})
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw.encode(), max_bytes=65536, max_text_chars=5000)
    assert err.value.field == "pronunciations"


def test_the_report_lists_what_was_said_another_way(tmp_path):
    settings = make_settings(tmp_path, pronunciations={"en": {"NAS": "network attached storage"}})
    service = unit_service(settings)
    drop(service.spool.inbox, "a.json", hello(text="The NAS and the GPU and the GPU.",
                                              pronunciations={"GPU": "graphics unit"}))  # fmt: skip
    service.executor.step()
    assert read_report(service.spool.outbox / "a")["pronunciations"] == [
        {"word": "NAS", "as": "network attached storage", "count": 1},
        {"word": "GPU", "as": "graphics unit", "count": 2},
    ]
