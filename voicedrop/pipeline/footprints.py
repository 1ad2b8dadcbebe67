"""Measured model footprints, persisted so that admission predicts from experience."""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class FootprintStore:
    """Peak device bytes per model key, kept as the largest seen (a safe prediction)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._peaks: dict[str, int] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self._peaks = {str(k): int(v) for k, v in data.items()}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("footprints.unreadable", path=str(path), error=str(exc))

    def get(self, key: str) -> int | None:
        return self._peaks.get(key)

    def record(self, key: str, peak: int) -> None:
        if peak <= self._peaks.get(key, -1):
            return
        self._peaks[key] = peak
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._peaks, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
