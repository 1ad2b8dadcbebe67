"""Measured model footprints, persisted so that admission predicts from experience.

Per model key: `peak`, the most device memory a block that used the model took
(its weights plus the working memory of the computation), and `weights`, the
bytes of the weights alone. Their difference is the working memory that must
be free before the model computes again, even while its weights stay resident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from voicedrop.fsutil import StateWrites, write_atomic

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Footprint:
    peak: int
    weights: int | None = None

    @property
    def working(self) -> int:
        return max(0, self.peak - (self.weights or 0)) if self.weights is not None else 0


class FootprintStore:
    """The largest footprint seen per model key (a safe prediction)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._writes = StateWrites("footprints")
        self._seen: dict[str, Footprint] = {}
        if path is not None and path.exists():
            try:
                self._seen = {str(k): _parse(v) for k, v in json.loads(path.read_text()).items()}
            except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
                log.warning("footprints.unreadable", path=str(path), error=str(exc))

    def get(self, key: str) -> Footprint | None:
        return self._seen.get(key)

    def record(self, key: str, peak: int, weights: int) -> None:
        old = self._seen.get(key)
        if old is not None and peak <= old.peak and old.weights == weights:
            return
        self._seen[key] = Footprint(max(peak, old.peak if old else 0), weights)
        if self.path is None:
            return
        data = {k: {"peak": f.peak, "weights": f.weights} for k, f in sorted(self._seen.items())}
        # kept in memory either way; a full disk only delays the file (next record)
        self._writes.attempt(self.path, lambda: self._write(json.dumps(data, indent=1)))

    def _write(self, text: str) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, text, overwrite=True, durable=False, sole_writer=True)


def _parse(value: object) -> Footprint:
    """Today's {"peak", "weights"} entries, or a bare peak as earlier versions wrote."""
    if isinstance(value, dict):
        weights = value.get("weights")
        return Footprint(int(value["peak"]), None if weights is None else int(weights))
    if isinstance(value, int | float | str):
        return Footprint(int(value))
    raise TypeError(f"unexpected footprint entry {value!r}")
