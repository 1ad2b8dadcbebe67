"""A job attempt's outcome, and the report built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import voicedrop
from voicedrop.daemon.spool import ClaimedJob
from voicedrop.errors import VoicedropError
from voicedrop.manifest import Manifest
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.stages import JobContext
from voicedrop.report import ErrorInfo, JobReport, ModelEvent, StageRecord, VramSnapshot


@dataclass
class Outcome:
    """What a job attempt produced, gathered before the report is built."""

    manifest: Manifest | None = None
    ctx: JobContext | None = None
    stages: list[StageRecord] = field(default_factory=list)
    error: VoicedropError | None = None
    duplicate_of: str | None = None


def error_info(error: VoicedropError) -> ErrorInfo:
    return ErrorInfo(code=error.code, message=error.message, field=error.field, kind=error.kind)


def build_report(
    job: ClaimedJob,
    out: Outcome,
    events: list[ModelEvent],
    before: dict[str, Any],
    manager: ResidencyManager,
    engines: Engines,
    *,
    previous_errors: list[ErrorInfo],
) -> JobReport:
    versions = {"voicedrop": voicedrop.__version__}
    for record in out.stages:
        if record.engine:
            engine = engines.tts.get(record.engine) or engines.convert[record.engine]
            versions[record.engine] = engine.version()
    error = out.error
    status: Literal["done", "failed", "duplicate"] = (
        "failed" if error else "duplicate" if out.duplicate_of else "done"
    )
    return JobReport(
        job_id=job.job_id,
        status=status,
        source=job.source,
        attempt=job.attempts,
        manifest=out.manifest.model_dump(mode="json") if out.manifest else None,
        error=error_info(error) if error else None,
        duplicate_of=out.duplicate_of,
        previous_errors=previous_errors,
        stages=out.stages,
        events=events,
        vram=VramSnapshot.model_validate({"before": before, "after": manager.get_vram_usage()}),
        models=manager.models(),
        outputs=out.ctx.outputs if out.ctx and not error else [],
        versions=versions,
    )
