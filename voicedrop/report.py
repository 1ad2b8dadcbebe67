"""Job report models: what `report.json` says about a finished job.

The report is the completion marker of a job and its only record, so it
carries everything a user needs to trust or debug a result: the manifest as
accepted, the error with its field, each stage with its time, every model
event, the seven VRAM fields before and after, and the outputs as measured.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VramStats(_Model):
    """Exactly the seven VRAM fields of the original LOW_VRAM design: a public contract."""

    available: bool
    low_vram_mode: bool
    allocated_gb: float
    reserved_gb: float
    free_gb: float
    total_gb: float
    cached_models: int


class ModelEvent(_Model):
    """One move of a model between tiers: load, prefetch (disk to host memory, ahead of
    its use), promote, demote, evict or drop."""

    event: Literal["load", "prefetch", "promote", "demote", "evict", "drop"]
    key: str
    src: Literal["disk", "host", "device"] = Field(alias="from")
    dst: Literal["disk", "host", "device"] = Field(alias="to")
    bytes: int
    seconds: float
    reason: str | None = None
    at: float | None = None  # when it ended: Unix time (the dashboard's timeline)
    allocated: int | None = None  # device bytes allocated right after it

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelView(_Model):
    """The extended per-model view beside the seven VRAM fields."""

    tier: Literal["disk", "host", "device"]
    device_bytes: int
    host_bytes: int
    loads: int
    promotes: int
    last_load_s: float | None
    last_peak_bytes: int | None
    pinned: bool = False
    leaves_in_s: float | None = None  # keep-alive: seconds until an idle model leaves the GPU
    keep_alive_s: float | None = None  # the last job's own keep-alive (-1: forever)


class ErrorInfo(_Model):
    code: str
    message: str
    field: str | None = None
    kind: Literal["permanent", "transient"]


class StageRecord(_Model):
    name: str
    engine: str | None
    seconds: float


class OutputRecord(_Model):
    file: str
    segment: str
    format: str
    sample_rate: int
    duration_s: float
    peak_dbfs: float | None  # null: silence (-inf dBFS, which JSON cannot hold)
    loudness_lufs: float | None
    cache: Literal["hit", "miss"] | None = None  # a clip from the clip cache, or made anew


class Overrun(_Model):
    """A cue whose speech is longer than its slot (after any stretch)."""

    cue: int
    start_s: float
    slot_s: float
    speech_s: float
    over_s: float
    stretch: float  # the time-stretch ratio applied (1.0: none)


class ScriptRecord(_Model):
    """A script job: its cues, the dub track, and what did not fit."""

    cues: int
    skipped_cues: int
    dub: str  # the dub track's file name
    duration_s: float
    overruns: list[Overrun] = Field(default_factory=list)
    subtitles: str | None = None  # what was spoken, with the clips' real timings
    cue_sheet: str | None = None  # CSV: cue, start, end, file, take
    encoding: str = "utf-8"  # what the script's bytes were read as (utf-16, cp1252 …)


class PauseRecord(_Model):
    """The job stepped aside between two segments for jobs of a higher priority."""

    after: int  # segments made when it stepped aside
    of: int  # segments in all
    seconds: float  # how long it was away


class Pronunciation(_Model):
    """A lexicon entry the job used: the word, what was said, how often."""

    word: str
    as_: str = Field(alias="as")
    count: int

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TakeScore(_Model):
    """One render of a clip, as a `qc` block measured it."""

    take: int
    passed: bool
    problems: list[str] = Field(default_factory=list)
    wer: float | None = None  # word error rate against the text (with an ASR model)
    heard: str | None = None  # what the ASR model heard
    duration_s: float
    clipped: float  # the share of samples at full scale
    lead_s: float
    trail_s: float
    gap_s: float  # the longest silence within the speech


class QCRecord(_Model):
    """A clip's takes, and which one was kept and why."""

    segment: str
    kept: int
    why: str
    takes: list[TakeScore]


class VramSnapshot(_Model):
    before: VramStats
    after: VramStats


class WorkerRecord(_Model):
    """Which cluster worker ran a job (`run --ray`): its actor, node, GPU and policy."""

    actor: str
    node: str
    address: str | None = None  # the node's IP address, as Ray knows it
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES as Ray set it for the actor
    device: str
    policy: str


class JobReport(_Model):
    schema_version: int = SCHEMA_VERSION
    job_id: str
    status: Literal["done", "failed", "duplicate"]
    source: str
    attempt: int
    manifest: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    duplicate_of: str | None = None
    previous_errors: list[ErrorInfo] = Field(default_factory=list)
    stages: list[StageRecord] = Field(default_factory=list)
    events: list[ModelEvent] = Field(default_factory=list)
    vram: VramSnapshot
    models: dict[str, ModelView] = Field(default_factory=dict)
    outputs: list[OutputRecord] = Field(default_factory=list)
    script: ScriptRecord | None = None
    passed_by: int = 0  # jobs that went ahead of this one because their models were loaded
    paused: list[PauseRecord] = Field(default_factory=list)  # stepped aside mid-job
    pronunciations: list[Pronunciation] = Field(default_factory=list)  # the lexicon, as used
    cache: dict[str, int] = Field(default_factory=dict)  # clips from the cache: hit, miss
    qc: list[QCRecord] = Field(default_factory=list)  # each clip's takes, checked
    worker: WorkerRecord | None = None  # set when a cluster worker ran it
    timings: dict[str, float | str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True) + "\n"


def unrun_report(job_id: str, source: str, code: str, message: str, vram: VramStats) -> JobReport:
    """The report of a job that failed before any attempt ran (cancelled in the inbox, an
    input whose manifest never came): nothing but why."""
    return JobReport(
        job_id=job_id,
        status="failed",
        source=source,
        attempt=0,
        error=ErrorInfo(code=code, message=message, kind="permanent"),
        vram=VramSnapshot(before=vram, after=vram),
    )
