"""Requests to the daemon that are not jobs — load a model, unload it — and their answers:
`<state>/control/`, the one owner of their format.

The HTTP side (`POST /models/{key}/load`, `/unload`) never touches a model: it writes a
request here and waits for the daemon's answer beside it. The daemon takes requests
between jobs, in the order they came, on its one executor thread, so a model is never
loaded behind a running job's back. Each daemon has its own state directory, so a
request reaches the daemon whose models it means.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from voicedrop.fsutil import write_atomic

FOLDER = "control"
ANSWER = ".answer.json"


class ControlRequest(BaseModel):
    op: Literal["load", "unload"]
    key: str
    keep_alive: float | None = None  # seconds (-1: stay) a loaded model stays once idle


def control_folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def send(state_dir: Path, request: ControlRequest) -> str:
    """Leave a request for the daemon; its id (to read the answer by)."""
    folder = control_folder(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    write_atomic(folder / f"{request_id}.json", request.model_dump_json(), durable=False)
    return request_id


def pending(state_dir: Path) -> list[tuple[str, ControlRequest | None]]:
    """Requests not yet answered, oldest first; None for one that cannot be read."""
    folder = control_folder(state_dir)
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
    except FileNotFoundError:
        return []
    found: list[tuple[str, ControlRequest | None]] = []
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime_ns):
        name = entry.name
        if name.startswith(".") or name.endswith(ANSWER):
            continue
        request_id = name.removesuffix(".json")
        try:
            found.append((request_id, ControlRequest.model_validate_json(Path(entry).read_bytes())))
        except (OSError, ValueError, ValidationError):
            found.append((request_id, None))
    return found


def answer(state_dir: Path, request_id: str, result: dict[str, Any]) -> None:
    """The daemon's answer; the request is done with."""
    folder = control_folder(state_dir)
    write_atomic(folder / f"{request_id}{ANSWER}", json.dumps(result), durable=False)
    (folder / f"{request_id}.json").unlink(missing_ok=True)


def read_answer(state_dir: Path, request_id: str) -> dict[str, Any] | None:
    """The answer, once there (it is then removed)."""
    path = control_folder(state_dir) / f"{request_id}{ANSWER}"
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return result


def withdraw(state_dir: Path, request_id: str) -> None:
    """Nobody waits for it any more (no daemon answered in time)."""
    (control_folder(state_dir) / f"{request_id}.json").unlink(missing_ok=True)
