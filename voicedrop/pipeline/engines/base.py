"""The engine protocols: what a TTS or voice-conversion engine offers the stages.

An engine never holds a model itself: for each request it declares the set of
models it needs (role → ModelSpec, in placement order), the stage acquires the
set through the residency manager and hands the placed models back to the
engine for each call. That keeps every byte of device memory accounted.

Each engine class declares a pydantic model for its `[engines.<name>]` section
(`Config`), checks the voices and conversion models configured for it at
start-up, and names the pip extra that installs its libraries.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import annotated_types
from pydantic import BaseModel, ConfigDict

from voicedrop.config import ConvertModel, Settings, Voice
from voicedrop.errors import ConfigError, EngineUnavailableError, ManifestError
from voicedrop.manifest import ConvertSpec, OptionValue, TTSSpec
from voicedrop.modelfiles import ModelFile
from voicedrop.pipeline.audio import Audio, join
from voicedrop.pipeline.modelspec import ModelSpec


class EngineConfig(BaseModel):
    """Base of the engines' settings models: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class VoiceChoice:
    """The voice a job asked for, resolved: a configured name and/or reference files."""

    name: str | None = None
    engine_voice: str | None = None
    references: tuple[Path, ...] = ()
    reference_text: str | None = None

    @property
    def reference(self) -> Path | None:
        return self.references[0] if self.references else None


@dataclass(frozen=True)
class TTSRequest:
    job_id: str
    voice: VoiceChoice
    language: str
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    segments: int = 1  # how many segments the job has (each is one stream() call)


@dataclass(frozen=True)
class ConvertRequest:
    job_id: str
    name: str  # the configured model's name
    model: ConvertModel
    spec: ConvertSpec


Progress = Callable[[str], None]  # a one-line status: "tts 2/5", "tts: xtts sentence 3/4"


class TTSEngine(Protocol):
    name: ClassVar[str]

    def version(self) -> str: ...

    def files(self) -> list[ModelFile]:
        """The model files its settings name (for `voicedrop models check`)."""
        ...

    def check_voice(self, name: str, voice: Voice) -> None:
        """Raise ConfigError (Settings.invalid) for a configured voice this engine cannot use."""
        ...

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        """Raise ManifestError (with the field) for a request this engine cannot serve."""
        ...

    def models(self, request: TTSRequest) -> dict[str, ModelSpec]: ...

    def deterministic(self, request: TTSRequest) -> bool:
        """Whether this request comes out the same every time (rule-based, or seeded): only
        then may a clip of it be cached (pipeline/clips.py)."""
        ...

    def stream(
        self, models: Mapping[str, Any], text: str, request: TTSRequest, progress: Progress
    ) -> Iterator[Audio]:
        """The speech for `text` in pieces, each as soon as it is made (a sentence, a
        batch): a listener hears the first while the rest is made. Joined, the pieces are
        the take; an engine that can only make the whole yields it once."""
        ...


def synthesize(
    engine: TTSEngine,
    models: Mapping[str, Any],
    text: str,
    request: TTSRequest,
    progress: Progress,
) -> Audio:
    """The whole take of `text`: the engine's pieces joined."""
    return join(engine.stream(models, text, request, progress))


class ConvertEngine(Protocol):
    name: ClassVar[str]

    def version(self) -> str: ...

    def files(self) -> list[ModelFile]: ...

    def check_model(self, name: str, model: ConvertModel) -> None: ...

    def check(self, request: ConvertRequest) -> None: ...

    def models(self, request: ConvertRequest) -> dict[str, ModelSpec]: ...

    def deterministic(self, request: ConvertRequest) -> bool: ...

    def convert(
        self, models: Mapping[str, Any], audio: Audio, request: ConvertRequest
    ) -> Audio: ...


@dataclass(frozen=True)
class EngineContext:
    """What an engine may know of the daemon's configuration: where model files may
    live, its own state directory (caches), how a relative path in the config resolves,
    and how to name a bad setting. Nothing else of `Settings` reaches an engine."""

    model_roots: tuple[Path, ...]
    state_dir: Path
    resolve: Callable[[Path], Path]
    invalid: Callable[[str, object, str], ConfigError]

    @classmethod
    def of(cls, settings: Settings) -> EngineContext:
        return cls(
            tuple(settings.model_roots), settings.state_path, settings.resolve, settings.invalid
        )


class EngineClass(Protocol):
    """What the registry holds: the class, its settings model, the extra that installs it."""

    name: str
    extra: str | None
    requires: tuple[str, ...]
    Config: type[EngineConfig]

    def __call__(self, config: Any, context: EngineContext) -> Any: ...


def installed(cls: EngineClass) -> bool:
    try:
        return all(importlib.util.find_spec(module) is not None for module in cls.requires)
    except (ImportError, ValueError):  # a broken or blocked package is not an installed one
        return False


def install_hint(extra: str | None) -> str:
    """How to install an engine's extra. voicedrop is installed from its checkout (it is on
    no package index), with the pins that keep a CPU or CUDA torch in place."""
    return (
        f"in the voicedrop checkout, pip install -c requirements/constraints.txt "
        f"'.[{extra}]' (docs/engines.md, Installing the engines)"
    )


def require_installed(cls: EngineClass) -> None:
    if not installed(cls):
        raise EngineUnavailableError(
            f"the {cls.name} engine is not installed: {install_hint(cls.extra)}"
        )


def option_ranges(config: type[BaseModel], *names: str) -> dict[str, tuple[float, float]]:
    """The ranges of the options a job may set, read from the engine's settings model
    (each field's `ge=` and `le=`): stated once, for the config file and the manifest."""
    ranges: dict[str, tuple[float, float]] = {}
    for name in names:
        bounds = {type(c): c for c in config.model_fields[name].metadata}
        low, high = bounds.get(annotated_types.Ge), bounds.get(annotated_types.Le)
        if not isinstance(low, annotated_types.Ge) or not isinstance(high, annotated_types.Le):
            raise TypeError(f"{config.__name__}.{name} needs both ge= and le= to be an option")
        ranges[name] = (float(low.ge), float(high.le))  # type: ignore[arg-type]
    return ranges


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
