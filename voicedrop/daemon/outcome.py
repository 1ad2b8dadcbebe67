"""The report of a job attempt, built from the runner's Outcome and the spool's view."""

from __future__ import annotations

from typing import Literal

from voicedrop.errors import VoicedropError
from voicedrop.manifest import Manifest
from voicedrop.pipeline.runner import Outcome
from voicedrop.report import (
    ErrorInfo,
    JobReport,
    OutputRecord,
    Pronunciation,
    VramSnapshot,
    VramStats,
)
from voicedrop.spool.claimed import ClaimedJob, display_name


def error_info(error: VoicedropError) -> ErrorInfo:
    return ErrorInfo(code=error.code, message=error.message, field=error.field, kind=error.kind)


def build_report(
    job: ClaimedJob,
    manifest: Manifest | None,
    out: Outcome,
    *,
    duplicate_of: str | None,
    previous_errors: list[ErrorInfo],
) -> JobReport:
    error = out.error
    status: Literal["done", "failed", "duplicate"] = (
        "failed" if error else "duplicate" if duplicate_of else "done"
    )
    return JobReport(
        job_id=job.job_id,
        status=status,
        source=job.source,
        attempt=job.attempts,
        manifest=manifest.model_dump(mode="json") if manifest else None,
        error=error_info(error) if error else None,
        duplicate_of=duplicate_of,
        previous_errors=previous_errors,
        stages=out.stages,
        events=out.events,
        vram=VramSnapshot(before=out.vram_before, after=out.vram_after or out.vram_before),
        models=out.models,
        outputs=[] if error else out.outputs,
        script=None if error else out.script,
        versions=out.versions,
        worker=out.worker,
        paused=out.pauses,
        cache=_cache_counts(out.outputs) if not error else {},
        qc=out.qc,
        pronunciations=[
            Pronunciation.model_validate({"word": w, "as": said, "count": n})
            for w, said, n in out.pronunciations
        ],
    )


def minimal_report(
    job: ClaimedJob, exc: BaseException, previous: list[ErrorInfo], vram: VramStats
) -> JobReport:
    """A failed report with only what cannot fail, for when the full one could not be built
    or written as JSON: the job still ends, the daemon never loops on it."""
    return JobReport(
        job_id=job.job_id,
        status="failed",
        source=job.source,
        attempt=job.attempts,
        error=ErrorInfo(
            code="internal_error",
            message=display_name(f"the report could not be built: {exc!r}")[:2000],
            kind="permanent",
        ),
        previous_errors=previous,
        vram=VramSnapshot(before=vram, after=vram),
    )


def _cache_counts(outputs: list[OutputRecord]) -> dict[str, int]:
    """How many clips came from the clip cache and how many were made anew."""
    counts = {"hit": 0, "miss": 0}
    for output in outputs:
        if output.cache is not None:
            counts[output.cache] += 1
    return counts if any(counts.values()) else {}
