"""Models under the client's control, as Ollama users expect: load one ahead of its jobs,
unload one, preload some at start-up — between jobs, on the executor's own thread.

Requests come through the spool (spool/control.py: the HTTP side's `POST
/models/{key}/load` and `/unload`) and are answered beside it with the model's view.
`[residency] preload` names models loaded once the daemon is ready. A key is a residency
key (`xtts`, `f5tts`, `vocos`, `rvc:alice`, `hubert` …) of the configuration in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from voicedrop.config import Settings
from voicedrop.errors import job_error
from voicedrop.pipeline.plan import Planner
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.spool import control

log = structlog.get_logger(__name__)


def check_preload(settings: Settings, planner: Planner) -> None:
    """A preload key the configuration cannot load stops start-up (ConfigError)."""
    known = planner.model_specs()
    for key in settings.residency.preload:
        if key not in known:
            raise settings.invalid(
                "residency.preload",
                settings.residency.preload,
                f"no model '{key}' in this configuration (known: {', '.join(sorted(known))})",
            )


class Controls:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def handle(self, planner: Planner, manager: ResidencyManager) -> int:
        """Answer the requests waiting, oldest first; how many were answered."""
        requests = control.pending(self.state_dir)
        for request_id, request in requests:
            if request is None:
                result: dict[str, Any] = {"ok": False, "status": 422, "error": "unreadable"}
            else:
                result = self._do(request, planner, manager)
            try:
                control.answer(self.state_dir, request_id, result)
            except OSError as exc:  # a full disk: the client times out and says so
                log.warning("control.answer_failed", error=str(exc))
        return len(requests)

    def preload(self, keys: list[str], planner: Planner, manager: ResidencyManager) -> None:
        for key in keys:
            result = self._do(control.ControlRequest(op="load", key=key), planner, manager)
            if not result["ok"]:
                log.error("model.preload_failed", model=key, error=result["error"])

    @staticmethod
    def _do(
        request: control.ControlRequest, planner: Planner, manager: ResidencyManager
    ) -> dict[str, Any]:
        key = request.key
        spec = planner.model_specs().get(key)
        if spec is None:
            known = ", ".join(sorted(planner.model_specs()))
            return {"ok": False, "status": 404, "error": f"no model '{key}' (known: {known})"}
        if request.op == "unload":
            manager.unload(key)
        else:
            keep = request.keep_alive
            try:
                manager.load(spec, None if keep is None or keep < 0 else keep)
            except Exception as exc:  # a broken model file: said to the client, not fatal
                error = job_error(exc)
                log.error("model.load_failed", model=key, error=error.message)
                status = 503 if error.kind == "transient" else 422
                return {"ok": False, "status": status, "error": error.message}
        log.info("model.controlled", op=request.op, model=key)
        view = manager.models().get(key)
        return {"ok": True, "model": key, "view": view.model_dump() if view else None}
