"""One check and plan of a job, before any model is loaded: the voice, the checks, the models.

Every part that must know whether a job can run, or which models it will need, asks
here, once per version of a manifest: the runner before it runs a job, the queue's
look-ahead for affinity and prefetch (the next job's first models come with its plan, so
a running job never resolves the next one's voice again), `validate` and `submit`, and
the HTTP side (through `voicedrop.intake.JobCheck`, without importing the engines).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from voicedrop.config import Settings
from voicedrop.errors import EngineUnavailableError, ManifestError
from voicedrop.manifest import ConvertSpec, Manifest
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
        self._specs: dict[str, ModelSpec] | None = None
        self._ready: set[str] = set()  # TTS engines that could plan a request

    @property
    def engine_names(self) -> list[str]:
        """The TTS engines this configuration can run: installed, and with their model
        files configured (an installed XTTS without `model_dir` is not offered)."""
        self.model_specs()
        return sorted(self._ready)

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

    def model_specs(self) -> dict[str, ModelSpec]:
        """Every model this configuration can load, by residency key: what `[residency]
        preload`, `POST /models/{key}/load` and the list of models name. (A model whose
        engine cannot plan it — no model file configured — is not among them.)"""
        if self._specs is None:
            specs: dict[str, ModelSpec] = {}
            for engine, request in self._tts_requests():
                with contextlib.suppress(Exception):  # this engine cannot plan this voice
                    specs.update(_by_key(self.engines.tts[engine].models(request)))
                    self._ready.add(engine)
            for name, convert_request in self._convert_requests():
                with contextlib.suppress(Exception):
                    specs.update(_by_key(self.engines.convert[name].models(convert_request)))
            self._specs = specs
        return self._specs

    def _tts_requests(self) -> Iterator[tuple[str, TTSRequest]]:
        """A request of each TTS engine with no voice, and with each voice configured."""
        for engine in self.engines.tts:
            yield engine, TTSRequest("models", VoiceChoice(), "en")
            for name, v in self.settings.voices.items():
                if v.engine == engine:
                    refs = tuple(self.settings.resolve(r) for r in v.references)
                    voice = VoiceChoice(name, v.engine_voice, refs, v.reference_text)
                    yield engine, TTSRequest("models", voice, "en")

    def _convert_requests(self) -> Iterator[tuple[str, ConvertRequest]]:
        """A request of each conversion model, with each pitch method that loads models."""
        for name, model in self.settings.models.items():
            if model.engine in self.engines.convert:
                for method in ("rmvpe", "pm"):
                    spec = ConvertSpec(engine=model.engine, model=name, method=method, pitch=0)
                    yield model.engine, ConvertRequest("models", name, model, spec)

    def model_keys(self) -> list[str]:
        return sorted(self.model_specs())

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
    if manifest.qc is not None:
        from voicedrop.pipeline.qc import asr_of, check_qc

        check_qc(manifest.qc, asr_of(settings))
    if manifest.output.fit and importlib.util.find_spec("librosa") is None:
        raise EngineUnavailableError(
            "needs librosa for its time-stretch (pip install librosa); or set fit = false",
            field="output.fit",
        )
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


def _by_key(specs: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    return {spec.key: spec for spec in specs.values()}
