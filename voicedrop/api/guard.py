"""ASGI middleware in front of every route (the bearer token, the body limit, a log line),
and reading a JSON body whatever it holds."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from voicedrop.api.desk import Rejected
from voicedrop.api.speech import SpeechError
from voicedrop.errors import ManifestError
from voicedrop.manifest import strict_json

log = structlog.get_logger(__name__)
WARMUP_HEADER = "X-Voicedrop-Warmup"
OPEN = frozenset({"/health", "/", "/ui/dashboard.js", "/ui/dashboard.css"})  # no data in them
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def read_json(request: Request) -> Any:
    """A request's JSON body, read as strictly as a manifest (no NaN, no key given twice);
    Rejected(422) saying why for anything else, however broken."""
    try:
        return strict_json((await request.body()).decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise Rejected(422, [f"body: not UTF-8 text (byte {exc.start})"]) from None
    except ManifestError as exc:
        raise Rejected(422, [f"body: {exc.message}"]) from None


def refusal(path: str, exc: Rejected, headers: dict[str, str] | None = None) -> Response:
    """A refused request's answer: in OpenAI's error shape under /v1 (its clients read
    that), as `{"detail": [problems]}` elsewhere."""
    if path.startswith("/v1/"):
        param = exc.problems[0].split(":")[0] if ":" in exc.problems[0] else None
        code = "invalid_api_key" if exc.status == 401 else None
        error = SpeechError(param, "; ".join(exc.problems), exc.status, code)
        return JSONResponse(error.body(), exc.status, headers=headers)
    return JSONResponse({"detail": exc.problems}, exc.status, headers=headers)


class Guard:
    """ASGI middleware: a bearer token on everything but /health and the dashboard's page
    and scripts, which hold no data (when a token is configured),
    a limit on request bodies (413), and one log line per request."""

    def __init__(self, app: Any, token: str | None, body_limit: int) -> None:
        self.app, self.token, self.body_limit = app, token, body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status: list[int] = []

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token and scope["path"] not in OPEN and not self._authorised(headers):
            response = refusal(
                scope["path"],
                Rejected(401, ["authorization: a valid bearer token is required"]),
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, sending)
        elif int(headers.get("content-length") or 0) > self.body_limit:
            limit = Rejected(413, [f"body: larger than {self.body_limit} bytes"])
            await refusal(scope["path"], limit)(scope, receive, sending)
        else:
            await self.app(scope, self._limited(receive), sending)
        if WARMUP_HEADER.lower() in headers:  # the server's own first walk (server.py)
            return
        log.info(
            "http.request",
            method=scope["method"],
            path=scope["path"],
            status=status[0] if status else None,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.encode(), self.token.encode()
        )

    def _limited(self, receive: Receive) -> Receive:
        """A body sent without Content-Length (chunked) is cut off at the limit too."""
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.body_limit:
                raise Rejected(413, [f"body: larger than {self.body_limit} bytes"])
            return message

        return limited
