"""Job manifest v1: parse and validate what producers drop into the inbox.

Manifests come from shared folders and are treated as hostile: size is capped
before reading, unknown keys are rejected, and every error names the field.
Whether an engine, voice or model exists is checked later against the
registries and the config (pipeline), since this module imports nothing else.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from voicedrop.codecs import CODECS
from voicedrop.errors import ManifestError

SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LANGUAGE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SCRIPT_SUFFIXES = (".srt", ".vtt", ".txt")
PATTERN_WORDS = {
    SAFE_NAME: "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    LANGUAGE: "must be a language tag such as 'en', 'pt' or 'pt-BR'",
}
OptionValue = float | int | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def speakable(text: str) -> str:
    """Text an engine can say: no control characters but tab and newlines (a NUL would cut
    a C engine's input short, and the job would report 'done' with half the words), and
    not only whitespace (that would be 'done' as a moment of silence)."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r":
            raise ValueError(f"control character U+{ord(ch):04X} at position {i}")
    if not text.strip():
        raise ValueError("text is only whitespace")
    return text


class Segment(_Strict):
    id: str = Field(pattern=SAFE_NAME)
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _speakable(cls, v: str) -> str:
        return speakable(v)


class TTSSpec(_Strict):
    engine: str = Field(min_length=1)
    voice: str | None = Field(None, min_length=1, max_length=255)
    language: str = Field("en", pattern=LANGUAGE)
    reference_text: str | None = Field(
        None,
        max_length=2000,
        description="what is said in the reference recording (F5-TTS needs it)",
    )
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @property
    def reference_path(self) -> str | None:
        """The voice as a relative file path next to the manifest, if it is one."""
        if self.voice is None:
            return None
        if "/" in self.voice or "\\" in self.voice or self.voice.lower().endswith(AUDIO_SUFFIXES):
            return self.voice
        return None

    @field_validator("reference_text")
    @classmethod
    def _speakable(cls, v: str | None) -> str | None:
        return None if v is None else speakable(v)

    @model_validator(mode="after")
    def _text_with_its_recording(self) -> TTSSpec:
        if self.reference_text is not None and self.reference_path is None:
            raise ValueError("reference_text goes with a reference recording given as tts.voice")
        return self

    @field_validator("voice")
    @classmethod
    def _safe_reference(cls, v: str | None) -> str | None:
        if v is None or not ("/" in v or "\\" in v or v.lower().endswith(AUDIO_SUFFIXES)):
            return v
        return relative_path(v, "a reference audio path")


def relative_path(v: str, what: str) -> str:
    """A file path next to the manifest: relative, without '..'."""
    if any(unicodedata.category(ch) == "Cc" for ch in v):
        raise ValueError(f"{what} must not contain control characters")
    path = PurePosixPath(v.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", v):
        raise ValueError(f"{what} must be relative to the manifest")
    if ".." in path.parts:
        raise ValueError(f"{what} must not contain '..'")
    return v


class ConvertSpec(_Strict):
    engine: str = Field(min_length=1)
    model: str = Field(pattern=SAFE_NAME)
    pitch: float = Field(0.0, ge=-24, le=24, description="shift in semitones")
    method: Literal["rmvpe", "pm", "harvest", "crepe"] = "rmvpe"
    options: dict[str, OptionValue] = Field(default_factory=dict)


class QCSpec(_Strict):
    """Takes that are checked: each clip measured, and made again (a new seed, where the
    engine takes one) while it fails, up to `takes` times; the best take is kept."""

    takes: int = Field(3, ge=1, le=10, description="renders per clip at most")
    wer_max: float | None = Field(
        None, ge=0, le=1, description="word error rate against the text, by the local ASR"
    )
    clipping: bool = Field(True, description="a clip must not clip")
    lead_max_s: float | None = Field(1.0, ge=0, le=60, description="silence before speech")
    trail_max_s: float | None = Field(1.0, ge=0, le=60, description="silence after speech")
    gap_max_s: float | None = Field(2.0, ge=0, le=60, description="silence within speech")
    fit_slot: bool = Field(True, description="script jobs: a clip fits its cue (after fit)")


TEMPLATE_FIELDS = ("job", "segment", "cue", "voice", "take", "date")
TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


class OutputSpec(_Strict):
    format: Literal["wav", "flac", "mp3", "opus"] = "wav"
    sample_rate: int | None = Field(
        None, ge=8000, le=192000, description="mp3 and opus take only their codecs' rates"
    )
    loudness_lufs: float | None = Field(None, ge=-70, le=-5)
    name: str = Field("speech", pattern=SAFE_NAME)
    fit: bool = Field(
        False, description="script jobs: time-stretch a clip that overruns its cue (pitch kept)"
    )
    template: str | None = Field(
        None,
        max_length=200,
        description="the clips' file names: {job}, {segment}, {cue}, {voice}, {take}, {date} "
        "(e.g. '{job}_{cue}_{voice}_take{take}'); default: name, or name-segment",
    )
    bit_depth: Literal[16, 24] = Field(16, description="wav and flac: 16- or 24-bit")
    bext: bool = Field(
        False,
        description="wav: a broadcast WAV bext chunk (the line, voicedrop, the cue's start) "
        "so each clip lands at its place when imported",
    )

    @field_validator("template")
    @classmethod
    def _known_fields(cls, v: str | None) -> str | None:
        if v is None:
            return v
        used = set(TEMPLATE_FIELD.findall(v))
        unknown = sorted(used - set(TEMPLATE_FIELDS))
        if unknown:
            known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise ValueError(f"unknown field {{{unknown[0]}}} (known: {known})")
        if not used & {"segment", "cue"}:
            raise ValueError("a template names each clip: use {segment} or {cue}")
        if "/" in v or "\\" in v or ".." in v:
            raise ValueError("a template is a file name: no '/', '\\' or '..'")
        return v

    @model_validator(mode="after")
    def _depth_and_bext_fit_the_format(self) -> OutputSpec:
        if self.bit_depth == 24 and self.format not in ("wav", "flac"):
            raise ValueError(f"bit_depth 24 is for wav and flac, not {self.format}")
        if self.bext and self.format != "wav":
            raise ValueError(f"bext is a chunk of WAV files, not {self.format}")
        return self

    @model_validator(mode="after")
    def _rate_fits_codec(self) -> OutputSpec:
        rates = CODECS[self.format].rates
        if rates and self.sample_rate is not None and self.sample_rate not in rates:
            allowed = ", ".join(str(r) for r in rates)
            raise ValueError(
                f"sample_rate {self.sample_rate} is not one {self.format} takes ({allowed})"
            )
        return self


class Manifest(_Strict):
    """A job: text, segments or a subtitle script, a TTS request, an optional conversion,
    an output."""

    version: Literal[1] = 1
    id: str | None = Field(None, min_length=1, max_length=200, description="client id")
    text: str | None = Field(None, min_length=1)
    segments: list[Segment] | None = Field(None, min_length=1, max_length=1000)
    script: str | None = Field(
        None,
        min_length=5,
        max_length=255,
        description="a subtitle file (.srt or .vtt) next to the manifest: one clip per cue "
        "and a dub track with each clip at its cue's start; or plain text (.txt): one clip "
        "per paragraph",
    )
    tts: TTSSpec
    convert: ConvertSpec | None = None
    output: OutputSpec = Field(default_factory=OutputSpec)  # type: ignore[arg-type]
    priority: int = Field(
        0,
        ge=-100,
        le=100,
        description="higher runs sooner, and may pause a running script job between cues; "
        "requests someone waits for over HTTP come at [http] priority",
    )
    pronunciations: dict[str, str] = Field(
        default_factory=dict,
        max_length=500,
        description="word -> how to say it, whole words (a lower-case word matches any "
        "case, one with a capital only as written); over [pronunciations.<language>]",
    )
    qc: QCSpec | None = Field(None, description="check each take, and make it again")
    origin: Literal["drop", "http"] = Field(
        "drop",
        description="where the job came from, for [retention]: the HTTP API sets 'http'",
    )
    keep_alive: float | None = Field(
        None,
        description="how long its models stay on the GPU once idle, whatever the policy: "
        'seconds or "30s", "5m", "2h"; 0 leaves at once, -1 stays (as Ollama\'s keep_alive)',
    )

    @field_validator("pronunciations")
    @classmethod
    def _words(cls, v: dict[str, str]) -> dict[str, str]:
        for word, said in v.items():
            if not word.strip() or len(word) > 100 or word != word.strip():
                raise ValueError(f"'{word[:40]}': a word of 1 to 100 characters, no spaces around")
            if len(said) > 300:
                raise ValueError(f"'{word}': its respelling is over 300 characters")
            speakable(said)
        return v

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return duration_s(v) if isinstance(v, str) else v

    @field_validator("keep_alive")
    @classmethod
    def _forever_is_minus_one(cls, v: float | None) -> float | None:
        if v is not None and ((v < 0 and v != -1) or v > 30 * 86400):
            raise ValueError("seconds from 0 to 30 days, or -1 to stay")
        return v

    @property
    def keep_alive_s(self) -> float | None:
        """The keep-alive in seconds, infinite for -1; None: the configured behaviour."""
        return (
            None
            if self.keep_alive is None
            else math.inf
            if self.keep_alive < 0
            else self.keep_alive
        )

    @field_validator("text")
    @classmethod
    def _speakable(cls, v: str | None) -> str | None:
        return None if v is None else speakable(v)

    @field_validator("script")
    @classmethod
    def _script_file(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().endswith(SCRIPT_SUFFIXES):
            raise ValueError("a script is a subtitle file (.srt, .vtt) or plain text (.txt)")
        return None if v is None else relative_path(v, "a script path")

    @model_validator(mode="after")
    def _one_text_source(self, info: ValidationInfo) -> Manifest:
        if sum(x is not None for x in (self.text, self.segments, self.script)) != 1:
            raise ValueError("give exactly one of 'text', 'segments' or 'script'")
        if self.segments is not None:
            ids = [s.id for s in self.segments]
            if len(set(ids)) != len(ids):
                raise ValueError("segment ids must be unique")
        limit = (info.context or {}).get("max_text_chars")
        total = sum(len(t) for _, t in self.items())
        if limit is not None and total > limit:
            raise ValueError(f"text is {total} characters; the limit is {limit}")
        return self

    def items(self) -> list[tuple[str, str]]:
        """(segment id, text) pairs; a plain `text` job is one segment named after the output
        (a script job's cues become its segments once the script is read: `with_cues`)."""
        if self.segments is not None:
            return [(s.id, s.text) for s in self.segments]
        return [(self.output.name, self.text or "")]


DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def duration_s(text: str) -> float:
    """'5m' -> 300.0, '30s', '1.5h', '250ms', '-1' (Ollama's forms)."""
    found = DURATION.match(text)
    if found is None:
        raise ValueError(f"'{text}' is not a duration: seconds, or a number with ms, s, m or h")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[found.group(2) or "s"]
    return float(found.group(1)) * unit


def schema() -> dict[str, Any]:
    return Manifest.model_json_schema()


def parse_manifest(raw: bytes, *, max_bytes: int, max_text_chars: int) -> Manifest:
    """Decode and validate manifest bytes; raise ManifestError naming the field."""
    if len(raw) > max_bytes:
        raise ManifestError(f"manifest is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is fine
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest is not UTF-8 text (byte {exc.start})") from None
    data = strict_json(text)
    if not isinstance(data, dict):
        raise ManifestError("a manifest must be a JSON object")
    try:
        return Manifest.model_validate(data, context={"max_text_chars": max_text_chars})
    except ValidationError as exc:
        raise _first_error(exc) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object naming a key twice is refused: the decoder would keep the last value
    without a word, and a manifest edited by hand would run with the text it did not mean."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key '{key[:80]}' appears twice in one object")
        found[key] = value
    return found


def strict_json(text: str) -> Any:
    """JSON as the standard defines it, whatever the input (a manifest, an HTTP body): every
    way the decoder can fail (a syntax error, nesting too deep, an integer literal past
    Python's 4,300-digit limit, NaN or Infinity, a key given twice) is a ManifestError,
    never another exception."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_one_value_per_key)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"malformed JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise ManifestError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # int-string digit limit, NaN/Infinity, a key given twice
        reason = str(exc).split(";")[0]
        if "integer string conversion" in reason:
            reason = "a number has too many digits"
        raise ManifestError(f"malformed JSON: {reason}") from None


def _first_error(exc: ValidationError) -> ManifestError:
    """The first problem names the report's field; all of them are kept for `validate`."""
    problems = []
    fields = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "string_pattern_mismatch":
            msg = PATTERN_WORDS.get(str((err.get("ctx") or {}).get("pattern")), msg)
        problems.append(f"{field}: {msg}" if field else msg)
        fields.append(field or None)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ManifestError(problems[0] + more, field=fields[0], problems=problems)
