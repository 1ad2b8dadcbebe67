"""The engine protocols: what a TTS or voice-conversion engine offers the stages.

An engine never holds a model itself: it describes one with a ModelSpec, the
stage acquires it through the residency manager and hands it back to the
engine for each call. That keeps every byte of device memory accounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from voicedrop.config import ConvertModel, Settings
from voicedrop.errors import ManifestError
from voicedrop.manifest import ConvertSpec, OptionValue, TTSSpec
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.modelspec import ModelSpec


@dataclass(frozen=True)
class VoiceChoice:
    """The voice a job asked for, resolved: a configured name and/or a reference file."""

    name: str | None = None
    engine_voice: str | None = None
    reference: Path | None = None
    reference_text: str | None = None


class TTSEngine(Protocol):
    name: str

    def version(self) -> str: ...

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        """Raise ManifestError (with the field) for a request this engine cannot serve."""
        ...

    def model_spec(self, voice: VoiceChoice, language: str) -> ModelSpec: ...

    def synthesize(
        self,
        model: Any,
        text: str,
        voice: VoiceChoice,
        language: str,
        options: Mapping[str, OptionValue],
    ) -> Audio: ...


class ConvertEngine(Protocol):
    name: str

    def version(self) -> str: ...

    def check(self, spec: ConvertSpec, model: ConvertModel) -> None: ...

    def model_spec(self, name: str, model: ConvertModel) -> ModelSpec: ...

    def convert(self, model: Any, audio: Audio, spec: ConvertSpec) -> Audio: ...


class EngineFactory(Protocol):
    def __call__(self, settings: Settings) -> Any: ...


def check_options(
    options: Mapping[str, OptionValue], allowed: Mapping[str, tuple[float, float]], field: str
) -> dict[str, float]:
    """Validate numeric engine options against their ranges; name the bad one."""
    out: dict[str, float] = {}
    for key, value in options.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ManifestError(f"unknown option (known: {known})", field=f"{field}.{key}")
        low, high = allowed[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ManifestError(
                f"must be a number from {low:g} to {high:g}, got {value!r}", field=f"{field}.{key}"
            )
        out[key] = float(value)
    return out
