"""What the dashboard shows, read from the spool only when someone looks.

One snapshot: the daemon (state, policy, device, the seven VRAM fields, each model's
tier), the waiting jobs in order (with a hint when affinity may run one first), the jobs
running (here, or on cluster workers), the latest finished jobs, and a timeline of device
memory over the last hour with every model move of the reports finished in it. The page
polls it with If-None-Match while it is visible: an unchanged snapshot is a 304 without a
body, but it is built each time (the inbox's listing, and the reports of the last hour
found in the spool's ledger, at most MAX_REPORTS): work done only while someone watches.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from voicedrop.api.desk import Desk
from voicedrop.api.speech import offered, voices
from voicedrop.client import vram_view
from voicedrop.config import DRILL_ENGINES
from voicedrop.errors import ManifestError
from voicedrop.intake import read_manifest
from voicedrop.spool.inbox import list_candidates
from voicedrop.spool.state import read_report_json

RECENT = 20  # finished jobs listed
WAITING = 50  # waiting jobs listed
WINDOW_S = 3600.0  # the timeline's span
MAX_EVENTS = 3000  # timeline marks, newest kept
MAX_REPORTS = 400  # reports read for the timeline
TEXT_CHARS = 120  # a job's text as listed


def snapshot(desk: Desk, now: float) -> dict[str, Any]:
    settings, jobs = desk.current()
    engines = offered(settings, jobs.engine_names)
    kept = {m.engine for m in settings.models.values()} - (
        set() if settings.http.drills else DRILL_ENGINES
    )
    daemon = desk.daemon()
    models = {k: v.model_dump() for k, v in daemon.models.items()} if daemon else {}
    in_memory = {k for k, v in models.items() if v.get("tier") != "disk"}
    finished = _finished(desk, now)
    return {
        "daemon": {
            "state": daemon.state if daemon else "not running",
            "policy": daemon.policy if daemon and daemon.policy else settings.policy,
            "device": daemon.device if daemon else None,
            "job_id": daemon.job_id if daemon else None,
            "stage": daemon.stage if daemon else None,
        },
        "vram": vram_view(settings, daemon),
        "models": models,
        "workers": daemon.workers if daemon else [],
        "counts": desk.spool.counts(),
        "waiting": _waiting(desk, in_memory),
        "running": sorted(p.name for p in _dirs(desk.spool.work)),
        "recent": [_summary(r) for r in finished[:RECENT]],
        "timeline": _timeline(finished, now),
        "voices": voices(settings, jobs.engine_names),
        "choices": {
            "engines": engines,
            "voices": {
                n: v.engine for n, v in sorted(settings.voices.items()) if v.engine in engines
            },
            "models": {n: m.engine for n, m in sorted(settings.models.items()) if m.engine in kept},
        },
    }


def etag(data: dict[str, Any]) -> str:
    """Of what the page draws: the clock alone changing is not a change."""
    timeline = {k: v for k, v in data["timeline"].items() if k != "now"}
    body = json.dumps({**data, "timeline": timeline}, sort_keys=True, default=str)
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:20] + '"'


def _dirs(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _waiting(desk: Desk, in_memory: set[str]) -> list[dict[str, Any]]:
    settings, jobs = desk.current()
    items = sorted(list_candidates(desk.spool.inbox) or [], key=lambda f: f.mtime_ns)
    waiting = []
    for item in items[:WAITING]:
        entry: dict[str, Any] = {"job_id": item.path.stem, "affinity": False}
        try:
            manifest = read_manifest(item.path, settings.limits)
        except ManifestError:
            entry["problem"] = "not a valid manifest: it will fail with a report"
            waiting.append(entry)
            continue
        entry |= _describe(manifest.model_dump(mode="json"))
        entry["affinity"] = bool(jobs.keys(manifest) & in_memory)
        waiting.append(entry)
    return waiting


def _describe(manifest: dict[str, Any] | None) -> dict[str, Any]:
    manifest = manifest or {}
    tts = manifest.get("tts") or {}
    convert = manifest.get("convert") or {}
    text = manifest.get("text") or " / ".join(
        s.get("text", "") for s in manifest.get("segments") or []
    )
    return {
        "engine": tts.get("engine"),
        "voice": tts.get("voice"),
        "convert": convert.get("model"),
        "text": shortened(text or manifest.get("script") or "", TEXT_CHARS),
    }


def shortened(text: str, limit: int) -> str:
    """`text` cut at a word within `limit` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:.") + "…"


def _finished(desk: Desk, now: float) -> list[dict[str, Any]]:
    """The reports of finished jobs, newest first: the latest RECENT, and those of the
    timeline's window (at most MAX_REPORTS), found in the spool's ledger — what a poll
    costs does not grow with the outbox."""
    reports = []
    for i, entry in enumerate(desk.spool.ledger.recent(MAX_REPORTS)):
        if i >= RECENT and entry.finished < now - WINDOW_S:
            break
        base = desk.spool.outbox if entry.folder == "outbox" else desk.spool.failed
        report = read_report_json(base / entry.job_id)
        if report is not None:
            if entry.origin == "http" and not _audio_kept(base / entry.job_id, report):
                report["outputs"] = []  # sent to its client, not kept: nothing to play
            reports.append(report)
    return reports


def _audio_kept(folder: Path, report: dict[str, Any]) -> bool:
    outputs = report.get("outputs") or [{}]
    return not isinstance(outputs[0], dict) or (folder / str(outputs[0].get("file"))).exists()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    timings = report.get("timings") or {}
    error = report.get("error") or {}
    worker = report.get("worker") or {}
    return {
        "job_id": report.get("job_id"),
        "status": report.get("status"),
        **_describe(report.get("manifest")),
        "finished_at": timings.get("finished_at"),
        "total_s": timings.get("total_s"),
        "stages": {s["name"]: s["seconds"] for s in report.get("stages", [])},
        "outputs": [o["file"] for o in report.get("outputs", [])],
        "audio_s": sum(o.get("duration_s", 0) for o in report.get("outputs", [])),
        "error": {k: error.get(k) for k in ("code", "field", "message")} if error else None,
        "events": sum(1 for e in report.get("events", []) if e.get("at") is not None),
        "worker": worker.get("actor"),
    }


def _timeline(reports: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Every model move (with a time) of the reports finished in the window, oldest first."""
    events = []
    for report in reports:
        finished = (report.get("timings") or {}).get("finished_at")
        if finished and datetime.fromisoformat(finished).timestamp() < now - WINDOW_S:
            continue
        for e in report.get("events", []):
            if e.get("at") is None:
                continue
            events.append(
                {
                    "at": e["at"],
                    "event": e["event"],
                    "key": e["key"],
                    "seconds": e["seconds"],
                    "bytes": e["bytes"],
                    "allocated": e.get("allocated"),
                    "job_id": report.get("job_id"),
                    "worker": (report.get("worker") or {}).get("actor"),
                }
            )
    events.sort(key=lambda e: e["at"])
    return {"now": now, "window_s": WINDOW_S, "events": events[-MAX_EVENTS:]}
