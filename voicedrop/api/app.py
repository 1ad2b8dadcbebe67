"""The HTTP API beside the drop folder (FastAPI): the original `/tts/synthesize`, OpenAI's
`/v1/audio/speech`, jobs, VRAM, models, health and Prometheus metrics.

Every request goes through the spool (`Desk`): a job is a manifest dropped into the inbox,
queued, run by the daemon's single executor and reported like any other. The OpenAPI
description is at `/openapi.json`, and `/docs` shows it with Swagger UI served from this
process (fastapi-offline's copy): a daemon on a network with no internet still has it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

import voicedrop
from voicedrop.api import board, models, openai
from voicedrop.api.desk import Desk, Rejected, job_json
from voicedrop.api.follow import Source, Withdrawn, audio_of
from voicedrop.api.guard import Guard, read_json, refusal
from voicedrop.api.respond import audio_response
from voicedrop.codecs import CODECS
from voicedrop.metrics import Metrics
from voicedrop.spool.ledger import hold
from voicedrop.spool.state import FINAL, JobState

log = structlog.get_logger(__name__)
FORM_FIELDS = {
    "text", "tts_engine", "voice", "language", "rvc_model", "pitch", "format",
    "reference", "reference_text", "convert_engine", "method", "convert_options",
    "keep_alive", "priority",
}  # fmt: skip
UI_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
DOCS_FILES = {  # Swagger UI, as fastapi-offline ships it
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
TEXT_FILES = {  # a script job's subtitles as spoken and its cue sheet
    ".srt": "application/x-subrip; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}


def create_app(desk: Desk, metrics: Metrics | None = None) -> FastAPI:
    """`metrics`: the daemon's own (in `run --http`); `serve` alone has none and shows
    the daemon's textfile metrics if configured, else the queue's."""
    app = FastAPI(
        title="voicedrop",
        version=voicedrop.__version__,
        summary=__doc__.splitlines()[0],
        docs_url=None,  # /docs below: Swagger UI without a CDN
        redoc_url=None,
    )
    settings, jobs = desk.current()
    jobs.model_keys()  # the models this configuration can load: worked out once, now
    desk.notes.start()  # the spool's watch, set up now rather than in a first request
    body_limit = settings.limits.max_reference_bytes + settings.limits.max_manifest_bytes + 65536
    app.add_middleware(Guard, token=settings.http.token, body_limit=body_limit)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> Response:
        headers = {"Retry-After": "30"} if exc.status in (429, 503) else None
        return refusal(request.url.path, exc, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes and methods, in OpenAI's error shape under /v1."""
        problem = f"{request.method} {request.url.path}: {exc.detail}"
        headers = dict(exc.headers) if exc.headers else None
        return refusal(request.url.path, Rejected(exc.status_code, [problem]), headers)

    app.include_router(openai.router(desk))
    app.include_router(models.router(desk))

    @app.post("/tts/synthesize", status_code=202)
    async def synthesize(request: Request, wait: float | None = None) -> Response:
        """The original API's request verbatim (form fields, an optional `reference`), or a JSON
        manifest. 202 with the job id; `?wait=SECONDS` answers with the audio when done."""
        manifest, reference = await _read_job_request(request)
        settings = desk.current()[0]
        if wait:  # someone waits: it goes first, or is refused at once when nothing runs it
            why = desk.unavailable()
            if why is not None:
                raise Rejected(503, [f"{why}: not queued"])
            manifest.setdefault("priority", settings.http.priority)
        job_id = await run_in_threadpool(desk.submit, manifest, reference)
        log.info("http.job_submitted", job_id=job_id)
        if wait:
            seconds = min(wait, settings.http.max_wait_s)
            state = await _wait(desk, job_id, seconds, request.is_disconnected)
            if state is not None and state.status in FINAL:
                return _result(desk, state)
        return _accepted(job_id)

    @app.get("/jobs/{job_id}/stream")
    async def job_stream(request: Request, job_id: str, format: str = "wav") -> Response:
        """Any job's audio as it is made (after it is done: its clips), in `format`."""
        if format not in CODECS:
            raise Rejected(422, [f"format: one of {', '.join(CODECS)}"])
        _known(desk, job_id)
        found = await audio_of(desk, job_id, gone=request.is_disconnected, withdraw=False)
        if isinstance(found, Source):
            return audio_response(found, format)
        if isinstance(found, Withdrawn):
            return Response(status_code=204)  # the client has gone: nobody reads this
        return JSONResponse(job_json(found), 409)

    @app.get("/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        """queued / running (with its stage) / done / failed, with the report when there is one."""
        return job_json(_known(desk, job_id))

    @app.get("/jobs/{job_id}/audio")
    async def job_audio(job_id: str) -> FileResponse:
        """The job's (first) audio file."""
        return _file(desk, job_id, None)

    @app.get("/jobs/{job_id}/files/{name}")
    async def job_file(job_id: str, name: str) -> FileResponse:
        """One output file, by the name its report gives."""
        return _file(desk, job_id, name)

    @app.post("/jobs/{job_id}/retry", status_code=202)
    async def retry(job_id: str) -> JSONResponse:
        """Drop a failed job again, as it was: 202 with the new job's id."""
        new_id = await run_in_threadpool(desk.retry, job_id)
        log.info("http.job_retried", job_id=new_id, retried=job_id)
        return _accepted(new_id)

    @app.delete("/jobs/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        """Cancel a job that has not started: it ends in failed/ with code `cancelled`."""
        state = await run_in_threadpool(desk.cancel, job_id)
        return job_json(state)

    @app.get("/vram")
    async def vram() -> dict[str, Any]:
        """The original design's `get_vram_usage()`: exactly its seven keys."""
        return desk.vram()

    @app.get("/health")
    async def health() -> JSONResponse:
        """Live (this answer) and ready (the daemon's heartbeat is recent): 200, else 503."""
        daemon = desk.daemon()
        age = daemon.heartbeat_age_s() if daemon else None
        ready = daemon is not None and daemon.ready
        body = {
            "live": True,
            "ready": ready,
            "daemon": daemon.state if daemon else "not running",
            "heartbeat_age_s": None if age is None else round(age, 1),
            "warming": bool(daemon and daemon.warming),
            "worker": _device_worker(daemon.workers if daemon else []),
        }
        return JSONResponse(body, 200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> Response:
        """The dashboard: a page and its script, no data (those come from /api/dashboard)."""
        return Response(_ui("dashboard.html"), media_type="text/html; charset=utf-8")

    @app.get("/ui/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        return _asset(UI_FILES, name, _ui)

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="voicedrop API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            swagger_favicon_url="/docs/favicon.png",
        )

    @app.get("/docs/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        return _asset(DOCS_FILES, name, _docs_asset)

    @app.get("/api/dashboard")
    async def dashboard_data(request: Request) -> Response:
        """Everything the dashboard draws, in one snapshot; 304 when unchanged."""
        data = await run_in_threadpool(board.snapshot, desk, time.time())
        tag = board.etag(data)
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return JSONResponse(data, headers={"ETag": tag, "Cache-Control": "no-cache"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        settings = desk.current()[0]
        textfile = settings.metrics.textfile
        if metrics is None and textfile is not None and textfile.exists():
            return Response(textfile.read_bytes(), media_type=CONTENT_TYPE_LATEST)
        source = metrics or Metrics()
        source.status(desk.daemon(), desk.spool.counts())
        return Response(source.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_job_request(request: Request) -> tuple[dict[str, Any], bytes | None]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        data = await read_json(request)
        if not isinstance(data, dict):
            raise Rejected(422, ["body: a manifest is a JSON object"])
        return data, None
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise Rejected(415, ["body: send form fields (as `curl -F` sends them) or a JSON manifest"])
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    unknown = sorted(set(form) - FORM_FIELDS)
    if unknown:
        raise Rejected(422, [f"{name}: unknown field" for name in unknown])
    fields = {k: v for k, v in form.items() if isinstance(v, str) and v.strip()}
    upload = form.get("reference")
    reference = await upload.read() if isinstance(upload, UploadFile) else None
    return form_manifest(fields), reference


def form_manifest(fields: dict[str, str]) -> dict[str, Any]:
    """The original API's form fields as a manifest (absent fields keep the manifest's defaults)."""
    if "text" not in fields:
        raise Rejected(422, ["text: required"])
    tts: dict[str, Any] = {}
    for form_name, key in (("tts_engine", "engine"), ("voice", "voice"), ("language", "language"),
                           ("reference_text", "reference_text")):  # fmt: skip
        if form_name in fields:
            tts[key] = fields[form_name]
    manifest: dict[str, Any] = {"text": fields["text"], "tts": tts}
    if "rvc_model" in fields:  # the original name; `convert_engine` (ours) picks another engine
        engine = fields.get("convert_engine", "rvc")
        convert: dict[str, Any] = {"engine": engine, "model": fields["rvc_model"]}
        if "pitch" in fields:
            convert["pitch"] = _number(fields, "pitch")
        if "method" in fields:
            convert["method"] = fields["method"]
        if "convert_options" in fields:
            convert["options"] = _json_object(fields, "convert_options")
        manifest["convert"] = convert
    else:
        stray = sorted({"pitch", "convert_engine", "method", "convert_options"} & set(fields))
        if stray:
            raise Rejected(422, [f"{', '.join(stray)}: only with rvc_model"])
    if "format" in fields:
        manifest["output"] = {"format": fields["format"]}
    if "keep_alive" in fields:
        keep = fields["keep_alive"]
        manifest["keep_alive"] = (
            keep if not keep.lstrip("-").replace(".", "").isdigit() else float(keep)
        )
    if "priority" in fields:
        manifest["priority"] = _number(fields, "priority")
    return manifest


def _number(fields: dict[str, str], name: str) -> float:
    try:
        return float(fields[name])
    except ValueError:
        raise Rejected(422, [f"{name}: not a number"]) from None


def _json_object(fields: dict[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(fields[name])
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise Rejected(422, [f'{name}: a JSON object, such as {{"index_rate": 0.5}}'])
    return value


async def _wait(
    desk: Desk, job_id: str, seconds: float, gone: Callable[[], Awaitable[bool]]
) -> JobState | None:
    """The job's state when it ends, or after `seconds`; a client that goes away while its
    job is still queued withdraws it."""
    deadline = time.monotonic() + seconds
    with desk.notes.following(job_id) as note:  # looked at when it changes (notes.py)
        state = await run_in_threadpool(desk.state, job_id)
        while (state is None or state.status not in FINAL) and time.monotonic() < deadline:
            if state is not None and state.status == "queued" and await gone():
                with contextlib.suppress(Rejected):  # it has just started: it runs
                    return await run_in_threadpool(desk.cancel, job_id)
            await note.wait(max(0.001, deadline - time.monotonic()))
            state = await run_in_threadpool(desk.state, job_id)
    return state


def _accepted(job_id: str) -> JSONResponse:
    location = f"/jobs/{job_id}"
    body = {"id": job_id, "status": "queued", "location": location}
    return JSONResponse(body, 202, headers={"Location": location})


def _result(desk: Desk, state: JobState) -> Response:
    if state.status == "failed":
        permanent = state.error is not None and state.error.kind == "permanent"
        return JSONResponse(job_json(state), 422 if permanent else 503)
    return _file(desk, state.job_id, None)


def _known(desk: Desk, job_id: str) -> JobState:
    state = desk.state(job_id)
    if state is None:
        raise Rejected(404, [f"no job '{job_id}'"])
    return state


def _file(desk: Desk, job_id: str, name: str | None) -> FileResponse:
    state = _known(desk, job_id)
    if state.status not in ("done", "duplicate"):
        raise Rejected(409, [f"job '{job_id}' is {state.status}: no audio"])
    path = desk.output(job_id, name)
    held = None if path is None else hold(path.parent)  # retention waits until it is sent
    if path is None or held is None:
        raise Rejected(404, [f"job '{job_id}' has no output '{name}'"])
    if not path.is_file():
        os.close(held)
        why = "a /v1 response's audio is not kept once sent: [http] keep_sent_audio"
        raise Rejected(410, [f"job '{job_id}' no longer has its output '{path.name}' ({why})"])
    codec = CODECS.get(path.suffix.lstrip("."))
    media = codec.media_type if codec else TEXT_FILES.get(path.suffix, "application/octet-stream")
    headers = {"X-Job-Id": job_id}
    return FileResponse(path, media_type=media, headers=headers, background=_Close(held))


class _Close(BackgroundTask):
    """Lets go of a held job once its response is sent."""

    def __init__(self, fd: int) -> None:
        super().__init__(os.close, fd)


def _ui(name: str) -> bytes:
    return (resources.files("voicedrop.api") / "ui" / name).read_bytes()


def _docs_asset(name: str) -> bytes:
    return (resources.files("fastapi_offline") / "static" / name).read_bytes()


def _asset(files: dict[str, str], name: str, read: Callable[[str], bytes]) -> Response:
    """One of the page assets this server ships (by name, never a path), or 404."""
    media = files.get(name)
    if media is None:
        return JSONResponse({"detail": [f"no file '{name}'"]}, 404)
    return Response(read(name), media_type=media)


def _device_worker(workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The device worker process in a health answer: its state and pid (None: jobs run in
    the daemon, or on a cluster)."""
    for w in workers:
        if w.get("kind") == "process":
            return {"state": w.get("state"), "pid": w.get("pid"), "exits_in_s": w.get("exits_in_s")}
    return None
