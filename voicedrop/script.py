"""Subtitle scripts (SRT, WebVTT) as cues to dub: what an editing suite hands off.

Parsed with maintained parsers (`srt`, `webvtt-py`); every problem is a ManifestError on
the `script` field naming the cue (its number and start time): text that is not UTF-8,
a cue that cannot be parsed, one that ends before it starts, lasts longer than
`limits.max_cue_s`, or overlaps the one before. Formatting tags are removed; a cue left
without words (a music note, say) is skipped and counted.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest, Segment, speakable

SUFFIXES = (".srt", ".vtt")
TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
VTT_TIME = re.compile(r"^\s*((\d+:)?\d{2}:\d{2}\.\d{3})\s+-->\s+((\d+:)?\d{2}:\d{2}\.\d{3})(\s|$)")


@dataclass(frozen=True)
class Cue:
    id: str  # cue0001 ... : the clip's segment id
    number: int  # 1-based, as the file counts them
    start_s: float
    end_s: float
    text: str

    @property
    def slot_s(self) -> float:
        return self.end_s - self.start_s

    def label(self) -> str:
        return f"cue {self.number} (at {_clock(self.start_s)})"


@dataclass(frozen=True)
class Script:
    cues: list[Cue]
    skipped: int  # cues without words

    @property
    def end_s(self) -> float:
        return max(c.end_s for c in self.cues)


def parse_script(raw: bytes, name: str, *, max_cue_s: float, max_chars: int) -> Script:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 (byte {exc.start})", field="script") from None
    suffix = name.lower().rsplit(".", 1)[-1]
    timed = _srt(text) if suffix == "srt" else _vtt(text)
    cues: list[Cue] = []
    skipped = 0
    for number, start, end, body in timed:
        words = " ".join(TAG.sub("", body).split())
        where = f"cue {number} (at {_clock(start)})"
        if end <= start:
            raise ManifestError(f"{where} ends at {_clock(end)}, before it starts", field="script")
        if end - start > max_cue_s:
            raise ManifestError(
                f"{where} lasts {end - start:.1f} s; the limit is {max_cue_s:g} s "
                "(limits.max_cue_s)",
                field="script",
            )
        if cues and start < cues[-1].end_s:
            raise ManifestError(
                f"{where} overlaps {cues[-1].label()}, which ends at {_clock(cues[-1].end_s)}",
                field="script",
            )
        if not words:
            skipped += 1
            continue
        try:
            speakable(words)
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}", field="script") from None
        cues.append(Cue(f"cue{number:04}", number, start, end, words))
    if not cues:
        raise ManifestError("the script has no cue with words to say", field="script")
    total = sum(len(c.text) for c in cues)
    if total > max_chars:
        raise ManifestError(
            f"the script's cues hold {total} characters; the limit is {max_chars}", field="script"
        )
    return Script(cues, skipped)


def _srt(text: str) -> list[tuple[int, float, float, str]]:
    import srt

    out: list[tuple[int, float, float, str]] = []
    try:
        for cue in srt.parse(text):
            out.append((cue.index, cue.start.total_seconds(), cue.end.total_seconds(), cue.content))
    except srt.SRTParseError as exc:
        after = f"after cue {out[-1][0]}" if out else "at the start"
        bad = (exc.unmatched_content or "").strip().splitlines()
        shown = " / ".join(bad[:2])[:120]
        raise ManifestError(f"cannot parse the cue {after}: '{shown}'", field="script") from None
    return out


def _vtt(text: str) -> list[tuple[int, float, float, str]]:
    import webvtt

    timings = [line for line in text.splitlines() if "-->" in line]
    for number, line in enumerate(timings, 1):  # webvtt-py skips a malformed cue silently
        if not VTT_TIME.match(line):
            raise ManifestError(
                f"cue {number}: malformed timing '{line.strip()[:80]}'", field="script"
            )
    try:
        captions = list(webvtt.from_buffer(io.StringIO(text)).captions)
    except Exception as exc:  # the parser's own errors (MalformedFileError, …)
        raise ManifestError(f"not a WebVTT file: {exc}", field="script") from None
    return [
        (i, c.start_in_seconds + _ms(c.start), c.end_in_seconds + _ms(c.end), c.text)
        for i, c in enumerate(captions, 1)
    ]


def _ms(stamp: str) -> float:
    """webvtt-py's *_in_seconds are whole seconds: add the milliseconds."""
    return int(stamp.rsplit(".", 1)[-1]) / 1000 if "." in stamp else 0.0


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}.{ms % 1000:03}"


def with_cues(manifest: Manifest, script: Script) -> Manifest:
    """The manifest a script job runs as: one segment per cue (ids cue0001 …)."""
    segments = [Segment(id=c.id, text=c.text) for c in script.cues]
    return manifest.model_copy(update={"segments": segments, "script": None})
