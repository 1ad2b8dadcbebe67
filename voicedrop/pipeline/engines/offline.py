"""Small offline engines with no weights.

`noop` makes `seconds` of silence per sentence, optionally spending `work_s` of wall time
in all as a slow engine would (its share before each sentence's piece): for benchmarks,
smoke tests and drills (does a stop let the job finish? does a kill -9 lose it? does a
stream start before the job ends? does a transient fault lose a job? — `fault_file`: while
that file exists, each sentence fails as a device fault would, transiently). `tape` is a
voice 'conversion' that shifts pitch like a tape speed change, so the convert stage runs
offline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

import voicedrop
from voicedrop.config import ConvertModel, Voice
from voicedrop.errors import TransientError
from voicedrop.manifest import TTSSpec
from voicedrop.modelfiles import ModelFile
from voicedrop.pipeline.audio import Audio, resample
from voicedrop.pipeline.engines.base import (
    ConvertRequest,
    EngineConfig,
    EngineContext,
    Progress,
    TTSRequest,
    VoiceChoice,
    check_options,
    option_ranges,
)
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.text import sentences


class _Nothing:
    """The 'model' of an engine that has none: it still goes through the manager."""


class NoopConfig(EngineConfig):
    sample_rate: int = Field(22050, ge=8000, le=192000)
    work_s: float = Field(0.0, ge=0, le=600)  # each job's default wait (drills, demos)
    seconds: float = Field(0.05, ge=0, le=60)  # each job's default length of silence
    fault_file: Path | None = None  # drills: while it exists, a transient fault per sentence


NOOP_OPTIONS = option_ranges(NoopConfig, "seconds", "work_s")  # what a job may set


class NoopEngine:
    name: ClassVar[str] = "noop"
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[EngineConfig]] = NoopConfig

    def __init__(self, config: NoopConfig, context: EngineContext) -> None:
        self.sample_rate = config.sample_rate
        self.work_s = config.work_s
        self.seconds = config.seconds
        self.fault_file = config.fault_file

    def version(self) -> str:
        return voicedrop.__version__

    def files(self) -> list[ModelFile]:
        return []

    def check_voice(self, name: str, voice: Voice) -> None:
        return None  # silence fits every voice

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        check_options(spec.options, NOOP_OPTIONS, "tts.options")

    def models(self, request: TTSRequest) -> dict[str, ModelSpec]:
        return {"model": ModelSpec("noop", lambda _device: _Nothing(), 0)}

    def deterministic(self, request: TTSRequest) -> bool:
        return True

    def stream(
        self, models: Mapping[str, Any], text: str, request: TTSRequest, progress: Progress
    ) -> Iterator[Audio]:
        """`seconds` of silence per sentence, after its share of `work_s` (the job's, shared
        among its segments and their sentences): one piece per sentence, as the real
        engines stream."""
        opts = check_options(request.options, NOOP_OPTIONS, "tts.options")
        parts = sentences(text) or [text]
        seconds = opts.get("seconds", self.seconds)
        for _ in parts:
            time.sleep(opts.get("work_s", self.work_s) / len(parts) / request.segments)
            if self.fault_file is not None and self.fault_file.exists():
                raise TransientError(f"drill: {self.fault_file} exists", code="drill_fault")
            yield Audio(np.zeros(int(seconds * self.sample_rate), np.float32), self.sample_rate)


class TapeConfig(EngineConfig):
    pass


class TapeEngine:
    """Pitch by resampling: +12 semitones doubles the pitch and halves the length."""

    name: ClassVar[str] = "tape"
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[EngineConfig]] = TapeConfig

    def __init__(self, config: TapeConfig, context: EngineContext) -> None:
        self.context = context

    def version(self) -> str:
        return voicedrop.__version__

    def files(self) -> list[ModelFile]:
        return []

    def check_model(self, name: str, model: ConvertModel) -> None:
        if model.path is not None:
            raise self.context.invalid(
                f"models.{name}.path", str(model.path), "the tape engine uses no model file"
            )
        if model.options:
            raise self.context.invalid(
                f"models.{name}.options", model.options, "the tape engine takes no options"
            )

    def check(self, request: ConvertRequest) -> None:
        check_options(request.spec.options, {}, "convert.options")

    def models(self, request: ConvertRequest) -> dict[str, ModelSpec]:
        return {"model": ModelSpec(f"tape:{request.name}", lambda _device: _Nothing(), 0)}

    def deterministic(self, request: ConvertRequest) -> bool:
        return True

    def convert(self, models: Mapping[str, Any], audio: Audio, request: ConvertRequest) -> Audio:
        factor = 2 ** (request.spec.pitch / 12)
        squeezed = resample(audio, max(1, round(audio.sample_rate / factor)))
        return Audio(squeezed.samples, audio.sample_rate)
