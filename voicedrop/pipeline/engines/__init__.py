"""Engine registries and their start-up: every engine's settings, voices and models checked.

Each registry maps a name to an engine class. `build_engines` validates each
engine's `[engines.<name>]` section against its settings model, builds the
engines whose libraries are installed, and checks every configured voice and
conversion model with the engine it names, so that a bad value stops start-up
(with key, value, source and what is allowed) instead of failing every job.
Engines that need torch import it only inside their loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from voicedrop.config import Settings
from voicedrop.pipeline.engines.base import (
    ConvertEngine,
    EngineClass,
    EngineContext,
    TTSEngine,
    install_hint,
    installed,
)
from voicedrop.pipeline.engines.espeak import EspeakEngine
from voicedrop.pipeline.engines.f5tts import F5Engine
from voicedrop.pipeline.engines.offline import NoopEngine, TapeEngine
from voicedrop.pipeline.engines.rvc import RvcEngine
from voicedrop.pipeline.engines.xtts import XttsEngine
from voicedrop.pipeline.registry import Registry

log = structlog.get_logger(__name__)


def default_registries() -> tuple[Registry[EngineClass], Registry[EngineClass]]:
    """A fresh pair of registries holding the built-in engines (no module-global state)."""
    tts: Registry[EngineClass] = Registry("tts engine")
    convert: Registry[EngineClass] = Registry("convert engine")
    tts_classes: list[EngineClass] = [EspeakEngine, NoopEngine, XttsEngine, F5Engine]
    convert_classes: list[EngineClass] = [TapeEngine, RvcEngine]
    for cls in tts_classes:
        tts.register(cls.name, cls)
    for cls in convert_classes:
        convert.register(cls.name, cls)
    return tts, convert


@dataclass(frozen=True)
class Engines:
    tts: dict[str, TTSEngine]
    convert: dict[str, ConvertEngine]
    # engines registered but not installed here: name → the pip extra that installs them
    missing_tts: dict[str, str] = field(default_factory=dict)
    missing_convert: dict[str, str] = field(default_factory=dict)

    def version(self, name: str) -> str:
        engine: Any = self.tts.get(name) or self.convert[name]
        return str(engine.version())


def build_engines(
    settings: Settings,
    registries: tuple[Registry[EngineClass], Registry[EngineClass]] | None = None,
) -> Engines:
    tts_reg, convert_reg = registries or default_registries()
    known = set(tts_reg) | set(convert_reg)
    for name in settings.engines:
        if name not in known:
            raise settings.invalid(
                f"engines.{name}",
                settings.engines[name],
                f"unknown engine (known: {', '.join(sorted(known))})",
            )
    missing_tts: dict[str, str] = {}
    missing_convert: dict[str, str] = {}
    tts = _build(settings, tts_reg, missing_tts)
    convert = _build(settings, convert_reg, missing_convert)
    engines = Engines(tts, convert, missing_tts, missing_convert)
    _check_voices(settings, engines, tts_reg)
    _check_models(settings, engines, convert_reg)
    return engines


def _build(settings: Settings, registry: Registry[EngineClass], missing: dict[str, str]) -> Any:
    built = {}
    context = EngineContext.of(settings)
    for name in registry:
        cls = registry.get(name)
        section = settings.engines.get(name, {})
        try:
            config = cls.Config.model_validate(section)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise settings.invalid(f"engines.{name}.{loc}", err.get("input"), err["msg"]) from None
        if not installed(cls):
            missing[name] = cls.extra or name
            continue
        built[name] = cls(config, context)
    return built


def _check_voices(settings: Settings, engines: Engines, registry: Registry[EngineClass]) -> None:
    for name, voice in settings.voices.items():
        key = f"voices.{name}.engine"
        _engine_for(settings, key, voice.engine, registry, engines.missing_tts, "tts")
        engines.tts[voice.engine].check_voice(name, voice)


def _check_models(settings: Settings, engines: Engines, registry: Registry[EngineClass]) -> None:
    for name, model in settings.models.items():
        key = f"models.{name}.engine"
        _engine_for(settings, key, model.engine, registry, engines.missing_convert, "convert")
        engines.convert[model.engine].check_model(name, model)


def _engine_for(
    settings: Settings,
    key: str,
    engine: str,
    registry: Registry[EngineClass],
    missing: dict[str, str],
    kind: str,
) -> None:
    """The engine a voice or model names is registered, and installed here."""
    if engine not in registry:
        raise settings.invalid(key, engine, f"unknown {kind} engine (known: {', '.join(registry)})")
    if engine in missing:
        raise settings.invalid(
            key,
            engine,
            f"the {engine} engine is not installed here: {install_hint(missing[engine])}",
        )
