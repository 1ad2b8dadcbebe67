"""Subtitle scripts (SRT, WebVTT) as cues to dub: what an editing suite hands off.

Read exactly, because a lenient reader speaks what nobody wrote: the `srt` and
`webvtt-py` parsers fold a cue that lost its timing line into the one before (its
number is then read aloud), speak a timing line that follows a non-numeric index, and
take `00:14,000` for fourteen minutes. So the reader here is strict and says why, in
words an editor recognises, naming the cue and its line: text in no encoding it can tell
for sure (UTF-8, UTF-16 with its byte order mark, Windows-1252 and other code pages
charset-normalizer reads without doubt are read: `decode`), a cue
without its number or its timing line, a timing that is not `HH:MM:SS,mmm -->
HH:MM:SS,mmm` (a one-dash arrow, a time without hours, four-digit milliseconds, 75
minutes), a cue number used twice, a cue that ends before it starts, lasts longer than
`limits.max_cue_s`, or overlaps the one before (a cue without words included). Formatting
tags are removed; a cue left without words — empty, or only music notes and punctuation
(`♪ ♪`) — is skipped and counted.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, replace
from typing import NoReturn

from voicedrop.config import Limits
from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest, Segment, speakable

SUFFIXES = (".srt", ".vtt")
TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
# ASCII digits only (`\d` takes '²' and other scripts' digits, which int() then refuses),
# and at most four of hours: a timeline is bounded anyway (limits.max_script_s).
STAMP = {
    "srt": re.compile(r"^([0-9]{2,4}):([0-5][0-9]):([0-5][0-9])[,.]([0-9]{3})$"),
    "vtt": re.compile(r"^(?:([0-9]{2,4}):)?([0-5][0-9]):([0-5][0-9])\.([0-9]{3})$"),
}
NUMBER = re.compile(r"[0-9]{1,9}")  # a cue number: its clip's id is cue<number>
FORM = {"srt": "00:00:01,000 --> 00:00:03,500", "vtt": "00:00:01.000 --> 00:00:03.500"}
LOOSE = re.compile(r"^([0-9]{1,9})(?::([0-9]{1,9}))?(?::([0-9]{1,9}))?[,.]([0-9]{1,9})$")


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
    kind: str = "srt"  # "srt", "vtt" or "txt": what it was written as
    encoding: str = "utf-8"  # what its bytes were read as (utf-8, utf-16, cp1252 …)

    @property
    def timed(self) -> bool:
        """Subtitles have times (a dub track, subtitles as spoken); plain text has none."""
        return self.kind != "txt"

    @property
    def end_s(self) -> float:
        return max(c.end_s for c in self.cues)


@dataclass(frozen=True)
class _Timed:
    number: int
    line: int  # of its timing line, 1-based
    start: float
    end: float
    body: str


def read_script(raw: bytes, name: str, limits: Limits) -> Script:
    """A script under the configuration's limits (its cues, its text, its timeline)."""
    return parse_script(
        raw,
        name,
        max_cue_s=limits.max_cue_s,
        max_chars=limits.max_text_chars,
        max_end_s=limits.max_script_s,
    )


def parse_script(
    raw: bytes, name: str, *, max_cue_s: float, max_chars: int, max_end_s: float = 4 * 3600
) -> Script:
    text, encoding = decode(raw)
    kind = name.lower().rsplit(".", 1)[-1]
    if kind == "txt":
        return replace(_paragraphs(text, max_chars), encoding=encoding)
    timed = _srt(text) if kind == "srt" else _vtt(text)
    cues: list[Cue] = []
    skipped = 0
    before: _Timed | None = None
    for cue in timed:
        where = f"cue {cue.number} (at {_clock(cue.start)}, line {cue.line})"
        if cue.end <= cue.start:
            _refuse(f"{where} ends at {_clock(cue.end)}, before it starts")
        if cue.end > max_end_s:
            _refuse(
                f"{where} ends at {_clock(cue.end)}, past the longest timeline a script may "
                f"have ({_clock(max_end_s)}, limits.max_script_s)"
            )
        if cue.end - cue.start > max_cue_s:
            _refuse(
                f"{where} lasts {cue.end - cue.start:.1f} s; the limit is {max_cue_s:g} s "
                "(limits.max_cue_s)"
            )
        if before is not None and cue.start < before.end:
            _refuse(
                f"{where} overlaps cue {before.number} (at {_clock(before.start)}), which "
                f"ends at {_clock(before.end)}"
            )
        before = cue
        words = " ".join(TAG.sub("", cue.body).split())
        if not any(ch.isalnum() for ch in words):  # nothing to say: empty, ♪ ♪, "…"
            skipped += 1
            continue
        try:
            speakable(words)
        except ValueError as exc:
            _refuse(f"{where}: {exc}")
        cues.append(Cue(f"cue{cue.number:04}", cue.number, cue.start, cue.end, words))
    if not cues:
        _refuse("the script has no cue with words to say")
    total = sum(len(c.text) for c in cues)
    if total > max_chars:
        _refuse(f"the script's cues hold {total} characters; the limit is {max_chars}")
    return Script(cues, skipped, kind, encoding)


def decode(raw: bytes) -> tuple[str, str]:
    """A script's text and the encoding it was read in. UTF-8 (with or without its BOM)
    and UTF-16 with its BOM are read as they say. Anything else is read as
    charset-normalizer finds it, where that is not in doubt: among the readings its mess
    detector finds cleanest, Windows-1252 (what Windows subtitle tools save for Western
    European languages) if it is one of them, or the one text they all agree on. When
    they disagree (a Cyrillic file reads as Cyrillic or as Thai), it is refused, naming
    the cue and the line where the readings part, and asking for UTF-8: a guess would be
    spoken as wrong letters without an error."""
    if raw.startswith(codecs.BOM_UTF8):
        return _strict(raw[len(codecs.BOM_UTF8) :], "utf-8"), "utf-8"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _strict(raw, "utf-16"), "utf-16"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(raw))
    low = min((m.chaos for m in matches), default=0.0)
    readings = {m.encoding: str(m) for m in matches if m.chaos <= low}
    western = raw.decode("cp1252", errors="replace")
    if "cp1252" in readings or western in readings.values():
        return western, "cp1252"
    if len(set(readings.values())) == 1:
        encoding, text = next(iter(readings.items()))
        return text, encoding
    texts = list(readings.values()) or [western]
    at = next(
        (i for i, chars in enumerate(zip(*texts, strict=False)) if len(set(chars)) > 1),
        next((i for i, ch in enumerate(western) if ord(ch) > 127), 0),
    )
    told = ", ".join(f"{t[at]!r} in {e}" for e, t in list(readings.items())[:3])
    raise ManifestError(
        f"{_where_in(western, at)} is not UTF-8, and its encoding cannot be told for sure"
        + (f" ({told})" if told else "")
        + " — save the file as UTF-8",
        field="script",
    )


def _strict(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        text = raw[: exc.start].decode(encoding, errors="replace")
        raise ManifestError(
            f"{_where_in(text, len(text))} is not {encoding.upper()} as its byte order mark "
            f"says — save the file as UTF-8",
            field="script",
        ) from None


def _where_in(text: str, at: int) -> str:
    """'cue 12 (line 47)': the cue (the last block that began with a number before `at`),
    and the line, of a place in a script's text."""
    line = text.count("\n", 0, at) + 1
    before = text[:at].splitlines()
    number = next((ln.strip() for ln in reversed(before) if NUMBER.fullmatch(ln.strip())), None)
    return f"cue {number} (line {line})" if number else f"line {line}"


def _paragraphs(text: str, max_chars: int) -> Script:
    """Plain text: each paragraph (lines up to a blank one) one clip, `para0001` …"""
    cues = []
    for number, (line, lines) in enumerate(_blocks(text), 1):
        words = " ".join(" ".join(lines).split())
        try:
            speakable(words)
        except ValueError as exc:
            _refuse(f"paragraph {number} (line {line}): {exc}")
        cues.append(Cue(f"para{number:04}", number, 0.0, 0.0, words))
    if not cues:
        _refuse("the text has no words to say")
    total = sum(len(c.text) for c in cues)
    if total > max_chars:
        _refuse(f"the text holds {total} characters; the limit is {max_chars}")
    return Script(cues, 0, "txt")


def _refuse(message: str) -> NoReturn:
    raise ManifestError(message, field="script")


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blocks of lines separated by blank ones, each with its first line's number."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not current:
                blocks.append((number, current))
            current.append(line.rstrip())
        else:
            current = []
    return blocks


def _srt(text: str) -> list[_Timed]:
    out: list[_Timed] = []
    seen: set[int] = set()
    for line, lines in _blocks(text):
        after = f"after cue {out[-1].number}" if out else "at the start"
        first = lines[0].strip()
        if "-->" in first:
            _refuse(f"line {line} ({after}): a cue without its number: '{first[:80]}'")
        if first.isdigit() and not NUMBER.fullmatch(first):
            _refuse(
                f"line {line} ({after}): cue number '{first[:20]}' is not a number of at "
                "most nine digits 0-9"
            )
        if not first.isdigit():
            _refuse(
                f"line {line} ({after}): a cue starts with its number, found '{first[:80]}' "
                "(a blank line inside a cue's text ends the cue)"
            )
        number = int(first)
        if number in seen:
            _refuse(f"line {line}: cue {number} again (each cue has its own number)")
        seen.add(number)
        if len(lines) < 2:
            _refuse(f"cue {number} (line {line}): no timing line after its number")
        start, end = _timing(lines[1], "srt", f"cue {number} (line {line + 1})")
        out.append(_Timed(number, line + 1, start, end, "\n".join(lines[2:])))
    return out


def _vtt(text: str) -> list[_Timed]:
    blocks = _blocks(text)
    if not blocks or not blocks[0][1][0].startswith("WEBVTT"):
        _refuse("not a WebVTT file: its first line must be 'WEBVTT'")
    out: list[_Timed] = []
    for line, lines in blocks[1:]:
        head = lines[0].split(maxsplit=1)[0] if lines[0].split() else ""
        if head in ("NOTE", "STYLE", "REGION"):
            continue
        number = len(out) + 1
        at = next((i for i, text in enumerate(lines[:2]) if "-->" in text or "->" in text), None)
        if at is None:
            _refuse(
                f"cue {number} (line {line}): no timing line ('{FORM['vtt']}'), "
                f"found '{lines[0].strip()[:80]}'"
            )
        start, end = _timing(lines[at], "vtt", f"cue {number} (line {line + at})")
        out.append(_Timed(number, line + at, start, end, "\n".join(lines[at + 1 :])))
    return out


def _timing(line: str, kind: str, where: str) -> tuple[float, float]:
    """A timing line's start and end; else why not, in an editor's words."""
    found = line.strip()
    left, arrow, right = found.partition("-->")
    if not arrow:
        if "->" in found or "=>" in found:
            _refuse(f"{where}: timing '{found[:80]}': the arrow between the times is '-->'")
        _refuse(f"{where}: found '{found[:80]}' where its timing belongs, like '{FORM[kind]}'")
    right = right.split()[0] if right.split() else ""  # WebVTT settings may follow
    times = []
    for stamp in (left.strip(), right):
        if not STAMP[kind].match(stamp):
            _refuse(f"{where}: timing '{found[:80]}': {_stamp_problem(stamp, kind)}")
        times.append(_seconds(stamp))
    return times[0], times[1]


def _stamp_problem(stamp: str, kind: str) -> str:
    loose = LOOSE.match(stamp)
    sep = "," if kind == "srt" else "."
    if not stamp:
        return "a time is missing"
    if loose is None:
        return f"'{stamp}' is not a time like 00:01:02{sep}500"
    parts = [p for p in loose.groups()[:3] if p is not None]
    ms = loose.group(4)
    if len(parts) == 2 and kind == "srt":
        return f"'{stamp}' has no hours: write 00:{parts[0]}:{parts[1]}{sep}{ms}"
    if len(parts) < 2:
        return f"'{stamp}' needs minutes and seconds: 00:00:{parts[0].zfill(2)}{sep}{ms}"
    if len(ms) != 3:
        return f"'{stamp}': milliseconds take three digits ({sep}{ms[:3].ljust(3, '0')})"
    if any(int(p) > 59 for p in parts[-2:]):
        return f"'{stamp}': minutes and seconds run from 00 to 59"
    return f"'{stamp}' is not a time like 00:01:02{sep}500 (two digits each)"


def _seconds(stamp: str) -> float:
    *hms, ms = re.split(r"[:,.]", stamp)
    value = 0.0
    for part in hms:
        value = value * 60 + int(part)
    return value + int(ms) / 1000


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}.{ms % 1000:03}"


def with_cues(manifest: Manifest, script: Script) -> Manifest:
    """The manifest a script job runs as: one segment per cue (ids cue0001 …)."""
    segments = [Segment(id=c.id, text=c.text) for c in script.cues]
    return manifest.model_copy(update={"segments": segments, "script": None})
