"""Models under the client's control, as Ollama users expect: load one ahead of its jobs,
unload one, preload some at start-up — between jobs, on the executor's own thread.

Requests come through the spool (spool/control.py: the HTTP side's `POST
/models/{key}/load` and `/unload`) and are answered beside it with the model's view.
`[residency] preload` names models loaded once the daemon is ready. A key is a residency
key (`xtts`, `f5tts`, `vocos`, `rvc:alice`, `hubert` …) of the configuration in force.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from voicedrop.config import Settings
from voicedrop.pipeline.plan import Planner
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


# Carries out one request where the models are (the dispatch: daemon/executor.py)
Do = Callable[[control.ControlRequest], dict[str, Any]]


class Controls:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def handle(self, do: Do) -> int:
        """Answer the requests waiting, oldest first; how many were answered."""
        requests = control.pending(self.state_dir)
        for request_id, request in requests:
            if request is None:
                result: dict[str, Any] = {"ok": False, "status": 422, "error": "unreadable"}
            else:
                result = do(request)
            try:
                control.answer(self.state_dir, request_id, result)
            except OSError as exc:  # a full disk: the client times out and says so
                log.warning("control.answer_failed", error=str(exc))
        return len(requests)

    def preload(self, keys: list[str], do: Do) -> None:
        for key in keys:
            result = do(control.ControlRequest(op="load", key=key))
            if not result["ok"]:
                log.error("model.preload_failed", model=key, error=result["error"])
