"""What an editing suite takes from a job: clips named for the timeline, broadcast WAV, the
subtitles of what was spoken and a cue sheet.

- File names from a template: `{job}`, `{segment}`, `{cue}`, `{voice}`, `{take}`, `{date}`
  (each filled in with file-name-safe characters).
- A broadcast WAV `bext` chunk (EBU Tech 3285, version 1): the description is the line
  (in ASCII, accents dropped, as the standard asks), the originator `voicedrop`, the
  originator reference the job, and the time reference the cue's start in samples, so an
  NLE that reads BWF places the clip where it belongs.
- The subtitles of a script job as spoken (SRT or WebVTT, as the script came): each cue
  from its start for as long as its clip really lasts, after any time-stretch; and a
  cue sheet (CSV: cue, start, end, file, take).
"""

from __future__ import annotations

import csv
import io
import re
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
BEXT_FIXED = 602  # bytes before the coding history (EBU Tech 3285 v1)


def file_stem(template: str, **fields: str | int) -> str:
    """The template filled in, each field made safe for a file name."""
    safe = {k: UNSAFE.sub("_", str(v)).strip("._") or "x" for k, v in fields.items()}
    stem = UNSAFE.sub("_", template.format_map(safe)).strip("._")
    return stem[:180] or "clip"


def ascii_text(text: str, size: int) -> bytes:
    """`text` as the bext chunk wants it: ASCII (accents dropped), cut to fit, NUL-padded."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore")
    return plain[:size].ljust(size, b"\0")


def bext_chunk(description: str, reference: str, time_reference: int, when: datetime) -> bytes:
    body = (
        ascii_text(description, 256)
        + ascii_text("voicedrop", 32)
        + ascii_text(reference, 32)
        + when.strftime("%Y-%m-%d").encode()
        + when.strftime("%H:%M:%S").encode()
        + struct.pack("<IIH", time_reference & 0xFFFFFFFF, time_reference >> 32, 1)
        + b"\0" * 64  # UMID
        + b"\0" * 190  # v2 loudness fields (none) and what is reserved
    )
    assert len(body) == BEXT_FIXED
    return b"bext" + struct.pack("<I", len(body)) + body


def with_bext(wav: bytes, chunk: bytes) -> bytes:
    """A RIFF/WAVE file with `chunk` placed before its `data` chunk, sizes set again."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    at = 12
    while at + 8 <= len(wav):
        kind, size = wav[at : at + 4], struct.unpack("<I", wav[at + 4 : at + 8])[0]
        if kind == b"data":
            break
        at += 8 + size + (size & 1)
    out = wav[:at] + chunk + wav[at:]
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


@dataclass(frozen=True)
class Spoken:
    """One cue as it was spoken: where it starts, how long its clip really lasts."""

    number: int
    start_s: float
    end_s: float
    text: str
    file: str
    take: int = 1


def subtitles(cues: Iterable[Spoken], kind: str) -> str:
    """SRT (`kind` "srt") or WebVTT of what was spoken, with the clips' real timings."""
    sep = "," if kind == "srt" else "."
    blocks = [] if kind == "srt" else ["WEBVTT\n"]
    for cue in cues:
        timing = f"{_stamp(cue.start_s, sep)} --> {_stamp(cue.end_s, sep)}"
        blocks.append(f"{cue.number}\n{timing}\n{cue.text}\n")
    return "\n".join(blocks)


def cue_sheet(cues: Iterable[Spoken]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["cue", "start", "end", "file", "take"])
    for cue in cues:
        writer.writerow([cue.number, f"{cue.start_s:.3f}", f"{cue.end_s:.3f}", cue.file, cue.take])
    return out.getvalue()


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}{sep}{ms % 1000:03}"
