"""JobRunner: one job's manifest and inputs in, an Outcome out.

It knows nothing of the spool: the executor claims, copies inputs and
publishes; the runner resolves the voice, checks the job against the engines,
runs the stages with the residency manager and returns everything the report
needs (stages, model events, VRAM before and after, the model view, outputs,
the error). So the same unit can run in another process or on another host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

import voicedrop
from voicedrop.config import GB, Settings
from voicedrop.errors import OutOfMemoryError, VoicedropError, job_error
from voicedrop.manifest import Manifest
from voicedrop.pipeline.clips import ClipCache, clip_keys
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.engines.base import Progress
from voicedrop.pipeline.live import LiveAudio, PcmSink
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.plan import Planner
from voicedrop.pipeline.registry import Registry
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.stages import (
    JobContext,
    Paused,
    Stage,
    Take,
    default_stages,
    never,
    stages_of,
)
from voicedrop.pipeline.text import Lexicon
from voicedrop.report import (
    ModelEvent,
    ModelView,
    OutputRecord,
    PauseRecord,
    QCRecord,
    ScriptRecord,
    StageRecord,
    VramStats,
    WorkerRecord,
)
from voicedrop.script import Script

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class JobInput:
    job_id: str
    manifest: Manifest
    reference: Path | None  # the reference recording, copied next to the job
    out_dir: Path
    script: Script | None = None  # a script job's cues (its manifest's segments are they)
    stream: PcmSink | None = None  # where its audio goes as it is made (live.py), if anywhere
    preempt: Callable[[], bool] = never  # between segments: step aside for another job?
    made: tuple[Take, ...] = ()  # segments made before it last stepped aside


@dataclass
class Outcome:
    """What a job attempt produced: all the report needs, with no live objects in it."""

    vram_before: VramStats
    vram_after: VramStats | None = None  # set by JobRunner.finish
    models: dict[str, ModelView] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    events: list[ModelEvent] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    script: ScriptRecord | None = None
    versions: dict[str, str] = field(default_factory=dict)
    error: VoicedropError | None = None
    worker: WorkerRecord | None = None  # a cluster worker's: who ran it
    paused: Paused | None = None  # it stepped aside for a job of a higher priority
    pauses: list[PauseRecord] = field(default_factory=list)  # each time it did, for the report
    pronunciations: list[tuple[str, str, int]] = field(default_factory=list)  # lexicon used
    qc: list[QCRecord] = field(default_factory=list)  # each clip's takes, checked


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        manager: ResidencyManager,
        *,
        stages: Registry[Stage] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engines = engines
        self.planner = Planner(settings, engines)
        self.manager = manager
        self.stages = stages or default_stages()
        self.clock = clock
        self.clips = ClipCache(settings.state_path / "clips", int(settings.cache.clips_gb * GB))

    def run(
        self,
        job: JobInput,
        progress: Progress,
        upcoming: Callable[[], Sequence[ModelSpec]] = list,
    ) -> Outcome:
        """Run `job`; `upcoming` gives the first models of the job likely next (from its
        plan), prefetched while this job's last model stage computes."""
        out = Outcome(vram_before=self.manager.get_vram_usage())
        self.manager.on_wait = progress  # a wait for the card is this job's stage
        with self.manager.recording() as events:
            try:
                plan = self.planner.plan(job.manifest, job.reference)
                voice = plan.voice
                specs = [*plan.tts.values(), *plan.convert.values()]
                self.manager.keep_alive_for(specs, job.manifest.keep_alive_s)
                output = job.manifest.output
                lexicon = Lexicon.of(
                    self.settings.pronunciations,
                    job.manifest.tts.language,
                    job.manifest.pronunciations,
                )
                ctx = JobContext(
                    job.job_id,
                    job.manifest,
                    self.settings,
                    self.engines,
                    self.manager,
                    voice,
                    job.out_dir,
                    progress,
                    script=job.script,
                    live=LiveAudio(job.stream, output.format, output.sample_rate),
                    preempt=job.preempt,
                    made=job.made,
                    spoken=[(seg, lexicon.apply(text)) for seg, text in job.manifest.items()],
                    clips=self.clips,
                )
                ctx.clip_keys = clip_keys(
                    self.clips, self.settings, self.engines, job.manifest, voice, ctx.spoken
                )
                out.pronunciations = lexicon.used()
                stages = stages_of(job.manifest, self.stages)
                wanted = [list(stage.models(ctx).values()) for stage in stages]
                for i, stage in enumerate(stages):
                    later = [w for w in wanted[i + 1 :] if w]
                    ctx.then = later[0] if later else list(upcoming())
                    out.stages.append(self._run_stage(stage, ctx))
                out.outputs = ctx.outputs
                out.script = ctx.script_record
                out.qc = ctx.qc
            except Paused as paused:
                out.paused = paused
            except Exception as exc:
                out.error = job_error(exc)
                if out.error.code == "internal_error":
                    log.exception("job.internal_error")
        out.events = list(events)
        self.manager.on_wait = None
        return self.finish(out)

    def finish(self, out: Outcome) -> Outcome:
        """Fill in what is measured after the attempt (also for attempts that never ran)."""
        out.vram_after = self.manager.get_vram_usage()
        out.models = self.manager.models()
        out.versions = {"voicedrop": voicedrop.__version__}
        for record in out.stages:
            if record.engine:
                out.versions[record.engine] = self.engines.version(record.engine)
        return out

    def _run_stage(self, stage: Stage, ctx: JobContext) -> StageRecord:
        """Run a stage; on out-of-memory, relieve the device and retry it once."""
        started = self.clock()
        with structlog.contextvars.bound_contextvars(stage=stage.name):
            ctx.progress(stage.name)
            try:
                stage.run(ctx)
            except Exception as exc:
                if not self.manager.is_oom(exc):
                    raise
                log.warning("stage.out_of_memory", error=str(exc), action="evict and retry once")
                self.manager.relieve()
                try:
                    stage.run(ctx)
                except Exception as exc2:
                    if not self.manager.is_oom(exc2):
                        raise
                    self.manager.relieve()
                    raise OutOfMemoryError(
                        f"stage '{stage.name}' ran out of device memory twice: {exc2}"
                    ) from exc2
        return StageRecord(
            name=stage.name, engine=stage.engine(ctx), seconds=round(self.clock() - started, 4)
        )
