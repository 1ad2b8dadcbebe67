"""The daemon's status file, `<state>/status.json`: one schema for its writer and its readers.

The daemon rewrites it on every change and at least every heartbeat; `voicedrop status`,
the HTTP side (health, models, the dashboard) and the metrics read it. A file that is
missing, half-written by another version or not JSON reads as "no daemon", never as an
error; unknown keys are ignored, so a newer or older daemon's file still reads.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voicedrop.report import ModelView, VramStats

STATUS_FILE = "status.json"
STALE_S = 30.0  # three of the daemon's heartbeats: older, it is not ready
State = Literal["starting", "idle", "running", "stopped"]


class DaemonStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: State = "starting"
    job_id: str | None = None
    stage: str | None = None
    pid: int | None = None
    updated: datetime | None = None
    watcher: str | None = None
    device: str | None = None
    policy: str | None = None
    vram: VramStats | None = None
    models: dict[str, ModelView] = Field(default_factory=dict)
    workers: list[dict[str, Any]] = Field(default_factory=list)  # `run --ray`: the pool's view
    warming: bool = False  # its libraries still load in the background: a first job waits

    @property
    def alive(self) -> bool:
        """Its daemon runs: it has not said it stopped, and its process exists."""
        if self.state == "stopped" or self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except PermissionError:  # another user's process: it exists
            return True
        except OSError:
            return False
        return True

    @property
    def ready(self) -> bool:
        """Alive and beating: its last heartbeat is recent (what `/health` and `voicedrop
        status --health` call ready)."""
        age = self.heartbeat_age_s()
        return self.alive and age is not None and age < STALE_S

    def heartbeat_age_s(self, now: datetime | None = None) -> float | None:
        if self.updated is None:
            return None
        return ((now or datetime.now(UTC)) - self.updated).total_seconds()

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def read_status(state_dir: Path) -> DaemonStatus | None:
    """The status a daemon of this state directory last wrote; None if there is none."""
    try:
        return DaemonStatus.model_validate_json(status_path(state_dir).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def live_status(state_dir: Path) -> DaemonStatus | None:
    """The status of a daemon that runs now; None when none does."""
    status = read_status(state_dir)
    return status if status is not None and status.alive else None
