"""A real reference recording for the cloning engines, spoken offline by espeak-ng."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from voicedrop.config import load_settings
from voicedrop.pipeline.engines.base import EngineContext, TTSRequest, VoiceChoice, synthesize
from voicedrop.pipeline.engines.espeak import EspeakConfig, EspeakEngine, EspeakSynth

TEXT = "This is the reference voice, recorded for a test."


def build_reference(path: Path, text: str = TEXT) -> tuple[Path, str]:
    settings = load_settings(env={})
    engine = EspeakEngine(EspeakConfig.model_validate({}), EngineContext.of(settings))
    synth = EspeakSynth(engine._library, engine._data)
    request = TTSRequest("reference", VoiceChoice(engine_voice="en-us"), "en")
    audio = synthesize(engine, {"synth": synth}, text, request, lambda _m: None)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.samples, audio.sample_rate, subtype="PCM_16")
    return path, text
