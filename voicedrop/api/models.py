"""The models, as clients see and steer them: `GET /models`, `POST /models/{key}/load` and
`POST /models/{key}/unload`.

The list shows every model the configuration can load, where each one is now (device,
host memory, disk), its bytes, and when an idle one leaves the device. Loading and
unloading are requests to the daemon through the spool (spool/control.py), answered
between jobs: the HTTP side never holds a model itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from voicedrop.api.desk import Desk, Rejected
from voicedrop.api.guard import read_json
from voicedrop.manifest import duration_s
from voicedrop.spool import control

POLL_S = 0.05


def router(desk: Desk) -> APIRouter:
    api = APIRouter(prefix="/models")

    @api.get("")
    async def models() -> dict[str, Any]:
        """Each model: its tier, bytes, loads, promotes, and (`leaves_in_s`) when an idle
        one leaves the device; the models no job has used yet are on `disk`."""
        daemon = desk.daemon()
        known = {k: v.model_dump() for k, v in daemon.models.items()} if daemon else {}
        for key in desk.current()[1].model_keys():
            known.setdefault(key, {"tier": "disk", "device_bytes": 0, "host_bytes": 0})
        return dict(sorted(known.items()))

    @api.post("/{key}/load")
    async def load(key: str, request: Request) -> JSONResponse:
        """Put a model on the device now and keep it there once idle: for `keep_alive`
        (seconds, "5m", -1: until room is needed, the default; 0: into memory only)."""
        body = await read_json(request) if await request.body() else {}
        keep = body.get("keep_alive") if isinstance(body, dict) else None
        try:
            seconds = duration_s(keep) if isinstance(keep, str) else keep
            if seconds is not None and not isinstance(seconds, int | float):
                raise ValueError("a number of seconds or a duration such as '5m'")
        except ValueError as exc:
            raise Rejected(422, [f"keep_alive: {exc}"]) from None
        return await _ask(desk, control.ControlRequest(op="load", key=key, keep_alive=seconds))

    @api.post("/{key}/unload")
    async def unload(key: str) -> JSONResponse:
        """Give a model's memory back (device and host memory)."""
        return await _ask(desk, control.ControlRequest(op="unload", key=key))

    return api


async def _ask(desk: Desk, request: control.ControlRequest) -> JSONResponse:
    """Send a request to the daemon and wait for its answer (it comes between jobs)."""
    why = desk.unavailable()
    if why is not None:
        raise Rejected(503, [why])
    state = desk.spool.state
    request_id = await run_in_threadpool(control.send, state, request)
    deadline = time.monotonic() + desk.current()[0].http.max_wait_s
    while (answer := control.read_answer(state, request_id)) is None:
        if time.monotonic() > deadline or not desk.daemon_runs():
            control.withdraw(state, request_id)
            raise Rejected(503, ["the daemon did not answer in time (it answers between jobs)"])
        await asyncio.sleep(POLL_S)
    if not answer.get("ok"):
        raise Rejected(int(answer.get("status", 500)), [f"model: {answer.get('error')}"])
    return JSONResponse({"model": answer["model"], **(answer.get("view") or {})})
