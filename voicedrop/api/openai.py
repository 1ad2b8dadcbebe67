"""OpenAI's audio API as OpenAI clients use it: `/v1/audio/speech` streamed, `/v1/models`,
`/v1/audio/voices`, and every error in OpenAI's shape.

A speech request is a job like any other (a manifest dropped into the spool, run by the
daemon's single executor), at `[http] priority` so it goes before queued drop-folder
work. Its audio streams as it is made (api/follow.py, api/respond.py). It fails fast and
honestly, because clients retry: no live daemon is a 503 at once with nothing queued
(and the client told not to retry); a full queue, or work ahead that would outlast what
the request can wait (api/wait.py), a 429 with the wait's honest `Retry-After`; a
client that goes away before its job starts withdraws the job; an `Idempotency-Key`
sent again finds its first job instead of making a second.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from voicedrop.api.desk import Desk, Rejected
from voicedrop.api.follow import Withdrawn, audio_of
from voicedrop.api.guard import WARMUP_HEADER, read_json
from voicedrop.api.respond import audio_response
from voicedrop.api.speech import (
    SpeechError,
    SpeechRequest,
    model_names,
    speech_manifest,
    voices,
)
from voicedrop.api.wait import SHOWN_RETRY_MAX_S, can_wait_s
from voicedrop.spool.state import JobState

NO_DAEMON_RETRY_S = 5
# The manifest fields a speech request becomes, by the request's own names: an error in
# OpenAI's shape names the parameter the client sent.
PARAMS = {
    "text": "input",
    "tts.engine": "model",
    "tts.voice": "voice",
    "tts.options.speed": "speed",
    "tts.options.rate": "speed",
    "keep_alive": "keep_alive",
}


def openai_error(exc: SpeechError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers=headers)


def router(desk: Desk) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.post("/audio/speech")
    async def speech(request: Request) -> Response:
        """OpenAI's speech endpoint: the audio streams as it is made (chunked), or as
        server-sent events with `stream_format: "sse"`."""
        settings, jobs = desk.current()
        try:
            body = SpeechRequest.model_validate(await read_json(request))
            manifest = speech_manifest(body, settings, jobs.engine_names)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            return openai_error(SpeechError(param, f"{param}: {first['msg']}"))
        except SpeechError as exc:
            return openai_error(exc)
        why = await run_in_threadpool(desk.unavailable)
        if why is not None:  # a retry a few seconds on would find the same: none is asked
            error = SpeechError(None, f"{why}: nothing was queued", 503, "daemon_unavailable")
            return openai_error(
                error, {"Retry-After": str(NO_DAEMON_RETRY_S), "x-should-retry": "false"}
            )
        ahead = await run_in_threadpool(desk.wait_ahead_s, int(manifest["priority"]))
        can = can_wait_s(request.headers.get("x-stainless-read-timeout"), settings.http.max_wait_s)
        if ahead > can:
            return _too_long(ahead, can)
        if WARMUP_HEADER in request.headers:  # the server's own first walk: checked, not run
            await run_in_threadpool(desk.check, manifest)
            return Response(status_code=204)
        key = request.headers.get("idempotency-key")
        try:
            job_id = await run_in_threadpool(desk.submit, manifest, None, "speech", key)
        except Rejected as exc:
            if exc.status != 422:
                raise  # a full queue: the guard answers 429 in OpenAI's shape
            field, _, why = exc.problems[0].partition(": ")
            param = PARAMS.get(field)
            message = f"{param}: {why}" if param and why else exc.problems[0]
            return openai_error(SpeechError(param, message))
        found = await audio_of(
            desk, job_id, gone=request.is_disconnected, start_within_s=settings.http.max_wait_s
        )
        if isinstance(found, Withdrawn):
            return _withdrawn(found)
        if isinstance(found, JobState):
            return _failed(found)
        sse, chars = body.stream_format == "sse", len(body.input)
        # sent again with its Idempotency-Key, a request is answered from the job's audio
        sent = None if key is not None else functools.partial(desk.sent, job_id)
        return audio_response(found, body.response_format, sse=sse, text_chars=chars, sent=sent)

    @api.get("/models")
    async def models() -> dict[str, Any]:
        """The model names `/v1/audio/speech` takes, in OpenAI's list shape."""
        settings, jobs = desk.current()
        names = model_names(settings, jobs.engine_names)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "voicedrop"} for n in names]
        return {"object": "list", "data": data}

    @api.get("/audio/voices")
    async def audio_voices() -> dict[str, Any]:
        """The voice names `/v1/audio/speech` takes, per engine, and the voice each is."""
        settings, jobs = desk.current()
        return {"voices": voices(settings, jobs.engine_names)}

    return api


def _too_long(ahead: float, can: float) -> JSONResponse:
    """429: the work ahead would outlast what the request can wait; try again when it
    would not (a wait OpenAI's SDK would not take is not retried by it at all)."""
    retry = math.ceil(ahead - can)
    message = (
        f"the queue ahead would take about {ahead:.0f} s and this request can wait {can:.0f} s "
        f"(its client's read timeout, or [http] max_wait_s): nothing was queued; try again "
        f"in {retry} s"
    )
    headers = {"Retry-After": str(retry)}
    if retry > SHOWN_RETRY_MAX_S:
        headers["x-should-retry"] = "false"
    return openai_error(SpeechError(None, message, 429, "queue_too_long"), headers)


def _withdrawn(found: Withdrawn) -> JSONResponse:
    why = (
        "the client went away"
        if found.client_gone
        else f"it waited {found.waited_s:.0f} s in the queue ([http] max_wait_s)"
    )
    error = SpeechError(None, f"job {found.job_id} was withdrawn before it started: {why}", 503)
    return openai_error(error, {"Retry-After": "30", "X-Job-Id": found.job_id})


def _failed(state: JobState) -> JSONResponse:
    error = state.error
    permanent = error is not None and error.kind == "permanent"
    message = error.message if error else f"job {state.job_id} ended {state.status}"
    status = 400 if permanent else 503
    headers = {"X-Job-Id": state.job_id, **({} if permanent else {"Retry-After": "30"})}
    param = PARAMS.get(str(error.field if error else None))
    code = error.code if error else None
    return openai_error(SpeechError(param, message, status, code), headers)
