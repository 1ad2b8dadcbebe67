"""Engine registries: built-in engines register here by name, once.

Each registry maps a name to a factory taking Settings; the service builds
the engines once at start-up. Engines that need torch (xtts, f5tts, rvc)
register here too when they land, importing torch only inside their loaders.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicedrop.config import Settings
from voicedrop.pipeline.engines.base import ConvertEngine, EngineFactory, TTSEngine
from voicedrop.pipeline.engines.espeak import EspeakEngine
from voicedrop.pipeline.engines.offline import NoopEngine, TapeEngine
from voicedrop.pipeline.registry import Registry

TTS_ENGINES: Registry[EngineFactory] = Registry("tts engine")
CONVERT_ENGINES: Registry[EngineFactory] = Registry("convert engine")

TTS_ENGINES.register("espeak", EspeakEngine)
TTS_ENGINES.register("noop", NoopEngine)
CONVERT_ENGINES.register("tape", TapeEngine)


@dataclass(frozen=True)
class Engines:
    tts: dict[str, TTSEngine]
    convert: dict[str, ConvertEngine]


def build_engines(settings: Settings) -> Engines:
    return Engines(
        tts={name: TTS_ENGINES.get(name)(settings) for name in TTS_ENGINES},
        convert={name: CONVERT_ENGINES.get(name)(settings) for name in CONVERT_ENGINES},
    )
