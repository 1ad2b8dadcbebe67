"""OpenAI's speech request (`POST /v1/audio/speech`) as a voicedrop manifest, and the names
it may use.

`model` is an OpenAI model name mapped in `[openai] models` (tts-1, tts-1-hd and
gpt-4o-mini-tts map to espeak by default) or a TTS engine's own name (`xtts`). `voice`
is, in this order: a name mapped in `[openai] voices`; a configured voice of the model's
engine, by its own name; any of OpenAI's voice names (alloy, ash, …), which all get the
engine's default voice (`[openai] default_voice`, else its first configured voice, else —
an engine with no voice configured — the engine's own default).
`speed` becomes the engine's own speed option (espeak: its words-per-minute rate).
`instructions` are accepted and ignored: no engine of voicedrop takes a style prompt.
Every request runs at 24 kHz, as OpenAI's audio is, in whatever format it is sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicedrop.config import DRILL_ENGINES, Settings

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable",
    "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip
SAMPLE_RATE = 24000
ESPEAK_RATE = 175  # espeak-ng's own default words per minute
ESPEAK_LIMITS = (80, 450)
Format = Literal["wav", "flac", "mp3", "opus", "pcm", "aac"]


class SpeechRequest(BaseModel):
    """OpenAI's `audio/speech` body; fields it does not know are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=100)
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field(min_length=1, max_length=100)
    instructions: str | None = Field(None, max_length=4096)
    response_format: Format = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    keep_alive: float | str | None = None  # Ollama's: how long its models stay once idle


class SpeechError(Exception):
    """An error in OpenAI's shape: which parameter, and why."""

    def __init__(
        self, param: str | None, message: str, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.status = status
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def engine_of(model: str, settings: Settings, engines: list[str]) -> str:
    """The TTS engine an OpenAI model name stands for."""
    engine = settings.openai.models.get(model) or (model if model in engines else None)
    if engine is None:
        known = ", ".join(model_names(settings, engines)) or "none"
        raise SpeechError(
            "model", f"unknown model '{model}' (known: {known})", 404, "model_not_found"
        )
    return engine


def offered(settings: Settings, engines: list[str]) -> list[str]:
    """The engines listed to users: the drill engines only with `[http] drills`."""
    return engines if settings.http.drills else [e for e in engines if e not in DRILL_ENGINES]


def model_names(settings: Settings, engines: list[str]) -> list[str]:
    """Every name `model` is listed with: the mapped OpenAI names, then the engines'
    (those `offered`; a drill engine's own name works unlisted)."""
    engines = offered(settings, engines)
    mapped = [m for m, e in settings.openai.models.items() if e in engines]
    return mapped + [e for e in engines if e not in mapped]


def voice_of(name: str, engine: str, settings: Settings) -> str | None:
    """The configured voice `name` stands for, for `engine` (the rule in the docstring);
    None: the engine's own default voice (an engine with no configured voice)."""
    ours = [n for n, v in settings.voices.items() if v.engine == engine]
    mapped = settings.openai.voices.get(name)
    if mapped in ours:
        return str(mapped)
    if name in ours:
        return name
    default = settings.openai.default_voice.get(engine) or (ours[0] if ours else None)
    if name in OPENAI_VOICES and (default in ours or not ours):
        return default
    known = sorted({*ours, *(v for v, n in settings.openai.voices.items() if n in ours)})
    if default in ours or not ours:
        known += list(OPENAI_VOICES)
    raise SpeechError(
        "voice",
        f"unknown voice '{name}' for the {engine} engine (known: {', '.join(known) or 'none'}; "
        f"configure one in [voices], map names in [openai] voices)",
    )


def voices(settings: Settings, engines: list[str]) -> list[dict[str, Any]]:
    """Every voice name `/v1/audio/speech` takes, with what it stands for, per engine
    (those `offered`)."""
    out = []
    for engine in offered(settings, engines):
        ours = [n for n, v in settings.voices.items() if v.engine == engine]
        names = [*ours, *(v for v in settings.openai.voices if v not in ours), *OPENAI_VOICES]
        for name in dict.fromkeys(names):
            try:
                out.append({"id": name, "name": name, "engine": engine,
                            "voice": voice_of(name, engine, settings)})  # fmt: skip
            except SpeechError:
                continue
    return out


def speech_manifest(
    request: SpeechRequest, settings: Settings, engines: list[str]
) -> dict[str, Any]:
    engine = engine_of(request.model, settings, engines)
    tts: dict[str, Any] = {"engine": engine, "options": speed_options(request, engine, settings)}
    voice = voice_of(request.voice, engine, settings)
    if voice is not None:
        tts["voice"] = voice
    manifest = {
        "text": request.input,
        "tts": tts,
        "output": {"format": "wav", "sample_rate": SAMPLE_RATE},  # encoded as it streams
        "priority": settings.http.priority,
    }
    if request.keep_alive is not None:
        manifest["keep_alive"] = request.keep_alive
    return manifest


def speed_options(request: SpeechRequest, engine: str, settings: Settings) -> dict[str, Any]:
    if request.speed == 1.0:
        return {}
    if engine in ("xtts", "f5tts"):
        return {"speed": request.speed}
    if engine == "espeak":
        base = float(settings.engines.get("espeak", {}).get("rate", ESPEAK_RATE))
        low, high = ESPEAK_LIMITS
        return {"rate": min(high, max(low, round(base * request.speed)))}
    raise SpeechError("speed", f"the {engine} engine has no speed setting: send speed 1.0")
