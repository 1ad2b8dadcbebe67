"""Stages: tts → convert (when asked) → post (post.py), each a Stage in a registry by name.

A stage acquires the set of models its engine declares for the request
through the residency manager, for exactly as long as it computes, so the
manager sees every model and can move it between jobs. Stages rebuild their
results from their inputs, so a stage can be retried once after an
out-of-memory error without duplicating takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from voicedrop.config import Settings
from voicedrop.errors import StageError
from voicedrop.manifest import Manifest
from voicedrop.pipeline import audio as au
from voicedrop.pipeline.clips import ClipCache
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.engines.base import (
    ConvertRequest,
    Progress,
    TTSEngine,
    TTSRequest,
    VoiceChoice,
)
from voicedrop.pipeline.live import LiveAudio
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.registry import Registry
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.report import OutputRecord, QCRecord, ScriptRecord
from voicedrop.script import Script


@dataclass
class Take:
    segment: str
    audio: au.Audio
    cache: Literal["hit", "miss"] | None = None  # from the clip cache; None: not cacheable
    done: bool = False  # through every stage before the post stage (it stepped aside there)


def never() -> bool:
    """A job nothing may interrupt (the default; and a cluster worker's)."""
    return False


class Paused(Exception):
    """A job with several segments (a script's cues) stepped aside between two of them for
    a job of a higher priority — in its TTS stage, or between the clips of its post stage —
    `takes` are the segments it has made, kept for its return."""

    def __init__(self, takes: list[Take], total: int) -> None:
        super().__init__(f"paused after {len(takes)} of {total}")
        self.takes = takes
        self.total = total

    def __reduce__(self) -> tuple[type[Paused], tuple[list[Take], int]]:
        return (Paused, (self.takes, self.total))  # crosses from a device worker process


@dataclass
class JobContext:
    job_id: str
    manifest: Manifest
    settings: Settings
    engines: Engines
    manager: ResidencyManager
    voice: VoiceChoice
    out_dir: Path
    progress: Progress
    takes: list[Take] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    script: Script | None = None  # a script job's cues: its takes are their clips
    script_record: ScriptRecord | None = None
    then: Sequence[ModelSpec] = ()  # the models wanted after this stage (prefetched meanwhile)
    live: LiveAudio | None = None  # the job's live stream (live.py), fed by its last audio stage
    preempt: Callable[[], bool] = never  # asked between segments: step aside now?
    made: Sequence[Take] = ()  # the segments made before the job last stepped aside
    spoken: list[tuple[str, str]] = field(default_factory=list)  # (segment, text said)
    clips: ClipCache | None = None  # renders made before (clips.py)
    clip_keys: list[str | None] = field(default_factory=list)  # per segment; None: not cached
    qc: list[QCRecord] = field(default_factory=list)  # the takes checked, per segment (qc.py)

    def cached(self, index: int) -> au.Audio | None:
        key = self.clip_keys[index] if index < len(self.clip_keys) else None
        return None if key is None or self.clips is None else self.clips.get(key)

    def miss(self, index: int) -> Literal["miss"] | None:
        return "miss" if index < len(self.clip_keys) and self.clip_keys[index] else None

    def keep_clips(self) -> None:
        """The job's last audio stage is done: its new renders go into the cache."""
        if self.clips is None:
            return
        for take, key in zip(self.takes, self.clip_keys, strict=False):
            if take.cache == "miss" and key is not None:
                self.clips.put(key, take.audio)

    def tts_request(self) -> TTSRequest:
        tts = self.manifest.tts
        segments = len(self.manifest.segments or ()) or 1
        return TTSRequest(self.job_id, self.voice, tts.language, tts.options, segments)

    def convert_request(self) -> ConvertRequest:
        spec = self.manifest.convert
        assert spec is not None
        return ConvertRequest(self.job_id, spec.model, self.settings.models[spec.model], spec)


class Stage(Protocol):
    name: str

    def engine(self, ctx: JobContext) -> str | None: ...

    def models(self, ctx: JobContext) -> Mapping[str, ModelSpec]:
        """The models the stage acquires (role → spec), without loading any."""
        ...

    def run(self, ctx: JobContext) -> None: ...


def _checked(audio: au.Audio, engine: str, *, allow_empty: bool = False) -> au.Audio:
    """An engine's audio is finite and not empty; a broken model is a clear error."""
    if audio.samples.size == 0 and not allow_empty:
        raise StageError(f"the {engine} engine produced no audio", code="empty_audio")
    if not np.all(np.isfinite(audio.samples)):
        raise StageError(f"the {engine} engine produced NaN or infinite samples", code="bad_audio")
    return audio


class TTSStage:
    name = "tts"

    def engine(self, ctx: JobContext) -> str | None:
        return ctx.manifest.tts.engine

    def models(self, ctx: JobContext) -> Mapping[str, ModelSpec]:
        return ctx.engines.tts[ctx.manifest.tts.engine].models(ctx.tts_request())

    def run(self, ctx: JobContext) -> None:
        engine = ctx.engines.tts[ctx.manifest.tts.engine]
        request = ctx.tts_request()
        items = ctx.spoken or ctx.manifest.items()
        live = ctx.live if ctx.manifest.convert is None else None  # else the conversion streams
        if live is not None:
            live.restart()
        takes = list(ctx.made)
        if live is not None:
            for take in takes:  # what a listener has heard already: skipped by the stream
                live.write(take.audio)
        hits = {i: ctx.cached(i) for i in range(len(takes), len(items))}
        todo = [i for i, audio in hits.items() if audio is None]
        models = ctx.manager.acquire_all(engine.models(request), then=ctx.then) if todo else None
        # a line said twice in a job (same words, same voice: the same cache key) is made
        # once: both cues sound the same, now and in every later version
        said: dict[str, au.Audio] = {}
        with models or contextlib.nullcontext({}) as placed:
            for i in range(len(ctx.made), len(items)):
                segment, text = items[i]
                if len(takes) > len(ctx.made) and ctx.preempt():  # one made since it came back
                    raise Paused(takes, len(items))
                ctx.progress(f"tts {i + 1}/{len(items)}")
                key = ctx.clip_keys[i] if i < len(ctx.clip_keys) else None
                cached = hits[i] if hits[i] is not None else said.get(key or "")
                if cached is not None:  # converted if it came from the cache (a hit)
                    hit = hits[i] is not None or ctx.manifest.convert is None
                    take = Take(segment, cached, "hit" if hit else ctx.miss(i))
                    if live is not None:
                        live.write(cached)
                else:
                    take = Take(segment, self.say(ctx, engine, placed, text, live), ctx.miss(i))
                    if key is not None:
                        said[key] = take.audio
                takes.append(take)
        if live is not None:
            live.end()
        ctx.takes = takes
        if ctx.manifest.convert is None:
            ctx.keep_clips()

    @staticmethod
    def say(
        ctx: JobContext,
        engine: TTSEngine,
        models: Mapping[str, Any],
        text: str,
        live: LiveAudio | None,
        request: TTSRequest | None = None,
    ) -> au.Audio:
        """One segment's take, streamed to `live` as it is made."""
        pieces = []
        for piece in engine.stream(models, text, request or ctx.tts_request(), ctx.progress):
            pieces.append(_checked(piece, engine.name, allow_empty=True))
            if live is not None:
                live.write(piece)
        return _checked(au.join(pieces), engine.name)


class ConvertStage:
    name = "convert"

    def engine(self, ctx: JobContext) -> str | None:
        return ctx.manifest.convert.engine if ctx.manifest.convert else None

    def models(self, ctx: JobContext) -> Mapping[str, ModelSpec]:
        request = ctx.convert_request()
        return ctx.engines.convert[request.spec.engine].models(request)

    def run(self, ctx: JobContext) -> None:
        request = ctx.convert_request()
        engine = ctx.engines.convert[request.spec.engine]
        converted = []
        if ctx.live is not None:
            ctx.live.restart()
        # a hit is a converted take already; a done one was converted before it stepped aside
        todo = [t for t in ctx.takes if t.cache != "hit" and not t.done]
        models = ctx.manager.acquire_all(engine.models(request), then=ctx.then) if todo else None
        with models or contextlib.nullcontext({}) as placed:
            for i, take in enumerate(ctx.takes, 1):
                ctx.progress(f"convert {i}/{len(ctx.takes)}")
                audio = take.audio
                if take.cache != "hit" and not take.done:
                    audio = _checked(engine.convert(placed, take.audio, request), engine.name)
                converted.append(Take(take.segment, audio, take.cache, take.done))
                if ctx.live is not None:
                    ctx.live.write(audio)
        if ctx.live is not None:
            ctx.live.end()
        ctx.takes = converted
        ctx.keep_clips()


def default_stages() -> Registry[Stage]:
    from voicedrop.pipeline.post import PostStage
    from voicedrop.pipeline.qc import QCStage

    stages: Registry[Stage] = Registry("stage")
    for stage in (TTSStage(), ConvertStage(), QCStage(), PostStage()):
        stages.register(stage.name, stage)
    return stages


def stages_of(manifest: Manifest, stages: Registry[Stage]) -> list[Stage]:
    names = ["tts", *(["convert"] if manifest.convert else []), *(["qc"] if manifest.qc else []),
             "post"]  # fmt: skip
    return [stages.get(n) for n in names]
