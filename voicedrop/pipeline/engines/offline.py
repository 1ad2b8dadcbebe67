"""Small offline engines with no weights.

`noop` makes `seconds` of silence, optionally spending `work_s` of wall time
as a slow engine would: for benchmarks, smoke tests and drills (does a stop
let the job finish? does a kill -9 lose it?). `tape` is a voice 'conversion'
that shifts pitch like a tape speed change, so the convert stage runs offline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

import voicedrop
from voicedrop.config import ConvertModel, Settings
from voicedrop.manifest import ConvertSpec, OptionValue, TTSSpec
from voicedrop.pipeline.audio import Audio, resample
from voicedrop.pipeline.engines.base import VoiceChoice, check_options
from voicedrop.pipeline.modelspec import ModelSpec

NOOP_OPTIONS = {"seconds": (0.0, 60.0), "work_s": (0.0, 600.0)}


class _Nothing:
    """The 'model' of an engine that has none: it still goes through the manager."""


class NoopEngine:
    name = "noop"

    def __init__(self, settings: Settings) -> None:
        self.sample_rate = 22050

    def version(self) -> str:
        return voicedrop.__version__

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        check_options(spec.options, NOOP_OPTIONS, "tts.options")

    def model_spec(self, voice: VoiceChoice, language: str) -> ModelSpec:
        return ModelSpec("noop", lambda _device: _Nothing(), 0)

    def synthesize(
        self,
        model: Any,
        text: str,
        voice: VoiceChoice,
        language: str,
        options: Mapping[str, OptionValue],
    ) -> Audio:
        opts = check_options(options, NOOP_OPTIONS, "tts.options")
        time.sleep(opts.get("work_s", 0.0))
        seconds = opts.get("seconds", 0.05)
        return Audio(np.zeros(int(seconds * self.sample_rate), np.float32), self.sample_rate)


class TapeEngine:
    """Pitch by resampling: +12 semitones doubles the pitch and halves the length."""

    name = "tape"

    def __init__(self, settings: Settings) -> None:
        return None

    def version(self) -> str:
        return voicedrop.__version__

    def check(self, spec: ConvertSpec, model: ConvertModel) -> None:
        check_options(spec.options, {}, "convert.options")

    def model_spec(self, name: str, model: ConvertModel) -> ModelSpec:
        return ModelSpec(f"tape:{name}", lambda _device: _Nothing(), 0)

    def convert(self, model: Any, audio: Audio, spec: ConvertSpec) -> Audio:
        factor = 2 ** (spec.pitch / 12)
        squeezed = resample(audio, max(1, round(audio.sample_rate / factor)))
        return Audio(squeezed.samples, audio.sample_rate)
