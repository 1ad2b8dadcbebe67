"""Stages: tts → convert (when asked) → post, each a Stage in a registry keyed by name.

A stage acquires its model through the residency manager for exactly as long
as it computes, so the manager sees every model and can move it between jobs.
Stages rebuild their results from their inputs, so a stage can be retried
once after an out-of-memory error without duplicating takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voicedrop.config import Settings
from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest
from voicedrop.pipeline import audio as au
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.engines.base import VoiceChoice
from voicedrop.pipeline.registry import Registry
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.report import OutputRecord


@dataclass
class Take:
    segment: str
    audio: au.Audio


@dataclass
class JobContext:
    job_id: str
    manifest: Manifest
    settings: Settings
    engines: Engines
    manager: ResidencyManager
    voice: VoiceChoice
    out_dir: Path
    takes: list[Take] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    progress: Callable[[str], None] = lambda _msg: None


class Stage(Protocol):
    name: str

    def engine(self, ctx: JobContext) -> str | None: ...

    def run(self, ctx: JobContext) -> None: ...


class TTSStage:
    name = "tts"

    def engine(self, ctx: JobContext) -> str | None:
        return ctx.manifest.tts.engine

    def run(self, ctx: JobContext) -> None:
        tts = ctx.manifest.tts
        engine = ctx.engines.tts[tts.engine]
        items = ctx.manifest.items()
        takes = []
        with ctx.manager.acquire(engine.model_spec(ctx.voice, tts.language)) as model:
            for i, (segment, text) in enumerate(items, 1):
                ctx.progress(f"tts {i}/{len(items)}")
                audio = engine.synthesize(model, text, ctx.voice, tts.language, tts.options)
                takes.append(Take(segment, audio))
        ctx.takes = takes


class ConvertStage:
    name = "convert"

    def engine(self, ctx: JobContext) -> str | None:
        return ctx.manifest.convert.engine if ctx.manifest.convert else None

    def run(self, ctx: JobContext) -> None:
        spec = ctx.manifest.convert
        assert spec is not None
        engine = ctx.engines.convert[spec.engine]
        model_spec = engine.model_spec(spec.model, ctx.settings.models[spec.model])
        converted = []
        with ctx.manager.acquire(model_spec) as model:
            for i, take in enumerate(ctx.takes, 1):
                ctx.progress(f"convert {i}/{len(ctx.takes)}")
                converted.append(Take(take.segment, engine.convert(model, take.audio, spec)))
        ctx.takes = converted


class PostStage:
    """Resample, reach the loudness target, encode; measure what was written."""

    name = "post"

    def engine(self, ctx: JobContext) -> str | None:
        return None

    def run(self, ctx: JobContext) -> None:
        out = ctx.manifest.output
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        ctx.outputs = []
        for take in ctx.takes:
            audio = au.resample(take.audio, out.sample_rate or take.audio.sample_rate)
            if out.loudness_lufs is not None:
                audio = au.normalize_loudness(audio, out.loudness_lufs)
            stem = out.name if ctx.manifest.segments is None else f"{out.name}-{take.segment}"
            path = ctx.out_dir / f"{stem}.{out.format}"
            path.unlink(missing_ok=True)  # a retried attempt replaces its own partial output
            au.write_audio(audio, path, out.format)
            ctx.outputs.append(
                OutputRecord(
                    file=path.name,
                    segment=take.segment,
                    format=out.format,
                    sample_rate=audio.sample_rate,
                    duration_s=round(audio.duration_s, 3),
                    peak_dbfs=au.peak_dbfs(audio),
                    loudness_lufs=au.loudness_lufs(audio),
                )
            )


STAGES: Registry[Stage] = Registry("stage")
for _stage in (TTSStage(), ConvertStage(), PostStage()):
    STAGES.register(_stage.name, _stage)


def plan(manifest: Manifest) -> list[Stage]:
    names = ["tts", *(["convert"] if manifest.convert else []), "post"]
    return [STAGES.get(n) for n in names]


def resolve_voice(manifest: Manifest, settings: Settings, reference: Path | None) -> VoiceChoice:
    """Map the manifest's voice to a configured voice or a copied reference file."""
    name = manifest.tts.voice
    if reference is not None:
        return VoiceChoice(reference=reference)
    if name is None:
        return VoiceChoice()
    if name not in settings.voices:
        known = ", ".join(sorted(settings.voices)) or "none configured"
        raise ManifestError(f"unknown voice '{name}' (known: {known})", field="tts.voice")
    voice = settings.voices[name]
    return VoiceChoice(name, voice.engine_voice, voice.reference, voice.reference_text)


def check_job(manifest: Manifest, settings: Settings, engines: Engines, voice: VoiceChoice) -> None:
    """Check names against the registries and config before any model is loaded."""
    tts = manifest.tts
    if tts.engine not in engines.tts:
        known = ", ".join(sorted(engines.tts))
        raise ManifestError(f"unknown engine '{tts.engine}' (known: {known})", field="tts.engine")
    engines.tts[tts.engine].check(tts, voice)
    conv = manifest.convert
    if conv is None:
        return
    if conv.engine not in engines.convert:
        known = ", ".join(sorted(engines.convert))
        raise ManifestError(
            f"unknown engine '{conv.engine}' (known: {known})", field="convert.engine"
        )
    model = settings.models.get(conv.model)
    if model is None or model.engine != conv.engine:
        known = ", ".join(n for n, m in sorted(settings.models.items()) if m.engine == conv.engine)
        raise ManifestError(
            f"unknown {conv.engine} model '{conv.model}' (known: {known or 'none configured'})",
            field="convert.model",
        )
    engines.convert[conv.engine].check(conv, model)
