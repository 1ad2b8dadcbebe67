"""The OpenAI-compatible speech request (`POST /v1/audio/speech`) as a voicedrop manifest.

`model` names a TTS engine through `[openai] models`, `voice` a configured voice through
`[openai] voices` (or directly by its name). `speed` becomes the engine's own speed
option (espeak: its words-per-minute rate). `pcm` is produced as WAV and served as raw
16-bit little-endian samples at 24 kHz, as OpenAI's clients expect.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicedrop.config import Settings

MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "pcm": "audio/pcm",
}
PCM_RATE = 24000
ESPEAK_RATE = 175  # espeak-ng's own default words per minute
ESPEAK_LIMITS = (80, 450)


class SpeechRequest(BaseModel):
    """OpenAI's `audio/speech` body (unknown fields such as `instructions` are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=100)
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field(min_length=1, max_length=100)
    response_format: Literal["wav", "flac", "mp3", "opus", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)


class SpeechError(Exception):
    """An OpenAI-style error: which parameter, and why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": None,
            }
        }


def speech_manifest(request: SpeechRequest, settings: Settings) -> dict[str, Any]:
    models = settings.openai.models
    engine = models.get(request.model)
    if engine is None:
        known = ", ".join(sorted(models)) or "none"
        raise SpeechError("model", f"unknown model '{request.model}' (configured: {known})")
    voice = settings.openai.voices.get(request.voice, request.voice)
    configured = settings.voices.get(voice)
    if configured is None or configured.engine != engine:
        ours = sorted(n for n, v in settings.voices.items() if v.engine == engine)
        mapped = sorted(k for k, v in settings.openai.voices.items() if v in ours)
        raise SpeechError(
            "voice",
            f"unknown voice '{request.voice}' for model '{request.model}' ({engine}): "
            f"known {', '.join(mapped + ours) or 'none'}; map more in [openai] voices",
        )
    tts: dict[str, Any] = {
        "engine": engine,
        "voice": voice,
        "options": speed_options(request, engine, settings),
    }
    fmt = "wav" if request.response_format == "pcm" else request.response_format
    output: dict[str, Any] = {"format": fmt}
    if request.response_format == "pcm":
        output["sample_rate"] = PCM_RATE
    return {"text": request.input, "tts": tts, "output": output}


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
