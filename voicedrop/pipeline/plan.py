"""One check and plan of a job, before any model is loaded: the voice, the checks, the models.

Every part that must know whether a job can run, or which models it will need, asks
here, once per version of a manifest: the runner before it runs a job, the queue's
look-ahead for affinity and prefetch (the next job's first models come with its plan, so
a running job never resolves the next one's voice again), `validate` and `submit`, and
the HTTP side (through `voicedrop.intake.JobCheck`, without importing the engines).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from voicedrop.config import Settings
from voicedrop.errors import EngineUnavailableError, ManifestError
from voicedrop.manifest import Manifest
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.engines.base import (
    ConvertRequest,
    EngineContext,
    TTSRequest,
    VoiceChoice,
    install_hint,
)
from voicedrop.pipeline.engines.common import loadable
from voicedrop.pipeline.modelspec import ModelSpec


@dataclass(frozen=True)
class JobPlan:
    """What a checked job needs: its voice, and the models of its TTS and conversion."""

    voice: VoiceChoice
    tts: Mapping[str, ModelSpec]
    convert: Mapping[str, ModelSpec] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return {s.key for s in (*self.tts.values(), *self.convert.values())}

    @property
    def first(self) -> list[ModelSpec]:
        """The models its first stage acquires (what is prefetched for it)."""
        return list(self.tts.values())


class Planner:
    """Plans jobs against one configuration and its engines (the daemon's, or the
    CLI's): the `voicedrop.intake.JobCheck` the client and the HTTP side are given."""

    def __init__(self, settings: Settings, engines: Engines) -> None:
        self.settings = settings
        self.engines = engines

    @property
    def engine_names(self) -> list[str]:
        return sorted(self.engines.tts)

    def plan(self, manifest: Manifest, reference: Path | None) -> JobPlan:
        """The job's plan, or the ManifestError / EngineUnavailableError that stops it;
        `reference`: its reference recording, where the manifest brings one."""
        voice = resolve_voice(manifest, self.settings, reference)
        check_job(manifest, self.settings, self.engines, voice)
        tts = manifest.tts
        request = TTSRequest("plan", voice, tts.language, tts.options)
        specs = self.engines.tts[tts.engine].models(request)
        convert: dict[str, ModelSpec] = {}
        if manifest.convert is not None:
            conv = manifest.convert
            model = self.settings.models[conv.model]
            convert = self.engines.convert[conv.engine].models(
                ConvertRequest("plan", conv.model, model, conv)
            )
        return JobPlan(voice, specs, convert)

    def check(self, manifest: Manifest, reference: Path | None) -> None:
        self.plan(manifest, reference)

    def keys(self, manifest: Manifest) -> set[str]:
        """The residency keys a job would use (affinity, the dashboard); none for a job
        that cannot run (it fails when its turn comes)."""
        ref = manifest.tts.reference_path
        try:
            return self.plan(manifest, Path(ref) if ref else None).keys
        except Exception:
            return set()


def resolve_voice(manifest: Manifest, settings: Settings, reference: Path | None) -> VoiceChoice:
    """Map the manifest's voice to a configured voice of its engine, or a copied recording."""
    tts = manifest.tts
    if reference is not None:
        return VoiceChoice(references=(reference,), reference_text=tts.reference_text)
    if tts.voice is None:
        return VoiceChoice()
    voice = _configured(settings.voices, tts.voice, tts.engine, "voice", "tts.voice")
    context = EngineContext.of(settings)
    refs = tuple(loadable(context, settings.resolve(r)) for r in voice.references)
    return VoiceChoice(tts.voice, voice.engine_voice, refs, voice.reference_text)


def check_job(manifest: Manifest, settings: Settings, engines: Engines, voice: VoiceChoice) -> None:
    """Check names against the registries and config before any model is loaded."""
    tts = manifest.tts
    _engine_known(tts.engine, engines.tts, engines.missing_tts, "tts.engine")
    engines.tts[tts.engine].check(tts, voice)
    conv = manifest.convert
    if conv is None:
        return
    _engine_known(conv.engine, engines.convert, engines.missing_convert, "convert.engine")
    model = _configured(settings.models, conv.model, conv.engine, "model", "convert.model")
    engines.convert[conv.engine].check(ConvertRequest("check", conv.model, model, conv))


class _OfEngine(Protocol):
    engine: str


E = TypeVar("E", bound=_OfEngine)


def _configured(entries: Mapping[str, E], name: str, engine: str, kind: str, field: str) -> E:
    """The configured voice or model `name`, if it belongs to `engine`; else an error that
    lists those that do (and says whose it is, if it belongs to another engine)."""
    entry = entries.get(name)
    if entry is None or entry.engine != engine:
        known = ", ".join(n for n, e in sorted(entries.items()) if e.engine == engine)
        other = f" ('{name}' is a {entry.engine} {kind})" if entry is not None else ""
        raise ManifestError(
            f"unknown {engine} {kind} '{name}'{other} (known: {known or 'none configured'})",
            field=field,
        )
    return entry


def _engine_known(
    name: str, built: Mapping[str, object], missing: Mapping[str, str], field: str
) -> None:
    if name in missing:
        raise EngineUnavailableError(
            f"the {name} engine is not installed on this machine: {install_hint(missing[name])}",
            field=field,
        )
    if name not in built:
        known = ", ".join(sorted([*built, *missing]))
        raise ManifestError(f"unknown engine '{name}' (known: {known})", field=field)
