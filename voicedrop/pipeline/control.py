"""A client's load or unload of one model, where the models are: in the daemon (inline),
or in its device worker process (cluster/child.py), which answers the same way."""

from __future__ import annotations

from typing import Any

import structlog

from voicedrop.errors import job_error
from voicedrop.pipeline.plan import Planner
from voicedrop.pipeline.residency import ResidencyManager

log = structlog.get_logger(__name__)


def unknown_model(key: str, planner: Planner) -> dict[str, Any] | None:
    """The answer to a request naming a model this configuration has not (None: known)."""
    specs = planner.model_specs()
    if key in specs:
        return None
    known = ", ".join(sorted(specs))
    return {"ok": False, "status": 404, "error": f"no model '{key}' (known: {known})"}


def control_model(
    op: str, key: str, keep_alive: float | None, planner: Planner, manager: ResidencyManager
) -> dict[str, Any]:
    """Load (`keep_alive` seconds once idle; None or negative: until room is needed) or
    unload one model; the answer carries its view, or why not (a broken file is said to
    the client, never fatal)."""
    unknown = unknown_model(key, planner)
    if unknown is not None:
        return unknown
    if op == "unload":
        manager.unload(key)
    else:
        try:
            keep = None if keep_alive is None or keep_alive < 0 else keep_alive
            manager.load(planner.model_specs()[key], keep)
        except Exception as exc:
            error = job_error(exc)
            log.error("model.load_failed", model=key, error=error.message)
            status = 503 if error.kind == "transient" else 422
            return {"ok": False, "status": status, "error": error.message}
    log.info("model.controlled", op=op, model=key)
    view = manager.models().get(key)
    return {"ok": True, "model": key, "view": view.model_dump() if view else None}
