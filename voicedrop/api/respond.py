"""A job's audio as an HTTP response that streams: chunked audio, or server-sent events.

Chunked audio is the format's bytes as they are encoded (api/encode.py). With
`stream_format: "sse"` each encoded chunk is a `speech.audio.delta` event (base64), and
the end a `speech.audio.done` event, as OpenAI defines them. A job that fails after its
audio began cuts a chunked response off (the client sees it incomplete); an event stream
ends with an `error` event instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from voicedrop.api.encode import encoder
from voicedrop.api.follow import JobFailed, Source
from voicedrop.codecs import CODECS

log = structlog.get_logger(__name__)


def audio_response(
    source: Source,
    fmt: str,
    *,
    sse: bool = False,
    text_chars: int = 0,
    sent: Callable[[bool], None] | None = None,
) -> StreamingResponse:
    """`text_chars`: what the done event's usage counts (characters: no tokens here);
    `sent`: told at the response's end whether the client had it whole (spool/sent.py)."""
    headers = {"X-Job-Id": source.job_id, "Cache-Control": "no-cache"}
    if sse:
        events = _told(_events(source, fmt, text_chars), sent)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    media = CODECS[fmt].media_type
    return StreamingResponse(_told(_audio(source, fmt), sent), media_type=media, headers=headers)


async def _told(
    chunks: AsyncIterator[bytes], sent: Callable[[bool], None] | None
) -> AsyncIterator[bytes]:
    """The response's chunks; then `sent(True)` once all went out, `sent(False)` if the
    client went away first (a job that failed made no audio to keep)."""
    whole = False
    try:
        async for data in chunks:
            yield data
        whole = True
    except JobFailed:
        sent = None
        raise
    finally:
        if sent is not None:
            try:  # a few file operations: done here, even while the response is cancelled
                sent(whole)
            except OSError as exc:  # retention removes the job's audio in the end anyway
                log.warning("http.audio_kept", error=str(exc))


async def _encoded(source: Source, fmt: str) -> AsyncIterator[bytes]:
    """Encoded on a worker thread: an encoder's work must not hold up other requests (raw
    PCM and WAV, a copy at most, on the loop: a thread hop would cost more than it)."""
    if fmt in ("pcm", "wav"):
        enc = encoder(fmt, source.sample_rate)
        async for pcm in source.chunks:
            if data := enc.add(pcm):
                yield data
        if tail := enc.finish():
            yield tail
        return
    enc = await run_in_threadpool(encoder, fmt, source.sample_rate)
    async for pcm in source.chunks:
        data = await run_in_threadpool(enc.add, pcm)
        if data:
            yield data
    tail = await run_in_threadpool(enc.finish)
    if tail:
        yield tail


async def _audio(source: Source, fmt: str) -> AsyncIterator[bytes]:
    try:
        async for data in _encoded(source, fmt):
            yield data
    except JobFailed as exc:
        log.warning("http.stream_cut", job_id=source.job_id, error=str(exc))
        raise


async def _events(source: Source, fmt: str, text_chars: int) -> AsyncIterator[bytes]:
    try:
        async for data in _encoded(source, fmt):
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
    except JobFailed as exc:
        error = exc.state.error
        yield _event(
            {
                "type": "error",
                "error": {
                    "message": str(exc),
                    "type": "server_error",
                    "code": error.code if error else None,
                },
            }
        )
        return
    usage = {"input_tokens": text_chars, "output_tokens": 0, "total_tokens": text_chars}
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
