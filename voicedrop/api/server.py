"""Serving the API with uvicorn: beside the daemon in a thread of its own (`run --http`),
or alone (`serve`). The executor never waits for it: requests only read and drop files.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import threading
import time

import structlog
import uvicorn
from fastapi import FastAPI

from voicedrop.api.guard import WARMUP_HEADER
from voicedrop.config import Settings
from voicedrop.errors import ConfigError
from voicedrop.warmup import ENCODERS, Warmup

log = structlog.get_logger(__name__)
LOOPBACK = ("localhost",)
STARTUP_S = 10.0


def listen_address(settings: Settings, override: str | None) -> tuple[str, int]:
    """HOST:PORT from `--http` or `[http] listen`; refuses a non-loopback address without
    `[http] token` (every endpoint but /health then needs it)."""
    listen = override or settings.http.listen
    if not listen:
        raise settings.invalid("http.listen", None, "give --http HOST:PORT or [http] listen")
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise settings.invalid("http.listen", listen, "must be HOST:PORT with a port 1-65535")
    if not _loopback(host) and not settings.http.token:
        raise settings.invalid(
            "http.token",
            None,
            f"required to listen on {host} (beyond loopback): set [http] token "
            "or VOICEDROP_HTTP__TOKEN (16 characters or more)",
        )
    return host, int(port_text)


def _loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpServer:
    """uvicorn on its own thread and event loop; `close()` stops it and joins the thread."""

    def __init__(self, app: FastAPI, host: str, port: int, token: str | None = None) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.address = f"{host}:{port}"
        self._thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self._warmup = Warmup(ENCODERS, self._touch)  # the first request as quick as the next
        self._token = token

    def start(self) -> None:
        self._warmup.start()
        self._thread.start()
        deadline = time.monotonic() + STARTUP_S
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the HTTP server could not listen on {self.address}")
            time.sleep(0.02)
        log.info("http.listening", address=self.address)

    def _touch(self) -> None:
        """Once listening, walk the speech routes once (a list, a request refused before any
        job, a request checked as a job would be and not run, a cancel of no job): FastAPI,
        pydantic, the job check and the worker threads do their first-time work now, not
        in a client's first request. Marked, so the log does not show them."""
        deadline = time.monotonic() + STARTUP_S
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        host = self.server.config.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        headers = {WARMUP_HEADER: "1", "Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        port = self.server.config.port

        def ask(method: str, path: str, body: bytes | None = None) -> bytes:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            try:
                connection.request(method, path, body=body, headers=headers)
                return connection.getresponse().read()
            except OSError as exc:
                log.debug("http.warmup_failed", error=str(exc))
                return b""
            finally:
                connection.close()

        try:
            model = json.loads(ask("GET", "/v1/models"))["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            model = "tts-1"
        ask("POST", "/v1/audio/speech", b"{}")
        speech = {"model": model, "voice": "alloy", "input": "Warm up."}
        ask("POST", "/v1/audio/speech", json.dumps(speech).encode())  # checked, not run
        ask("DELETE", "/jobs/no-such-job")  # the worker threads requests run on

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._warmup.close()

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
