"""ASGI middleware in front of every route: the bearer token, the body limit, a log line."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from fastapi.responses import JSONResponse, Response

from voicedrop.api.desk import Rejected

log = structlog.get_logger(__name__)
OPEN = frozenset({"/health", "/", "/ui/dashboard.js", "/ui/dashboard.css"})  # no data in them
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


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
            response: Response = JSONResponse(
                {"detail": ["authorization: a valid bearer token is required"]},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, sending)
        elif int(headers.get("content-length") or 0) > self.body_limit:
            response = JSONResponse({"detail": [f"body: larger than {self.body_limit} bytes"]}, 413)
            await response(scope, receive, sending)
        else:
            await self.app(scope, self._limited(receive), sending)
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
