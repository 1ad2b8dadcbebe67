"""What an engine tells the residency manager about a model: how to build it, what it needs.

Engines depend on this, not on the manager, so they stay testable on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Tier = Literal["disk", "host", "device"]


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what it is expected to need.

    `load(device_name)` builds the model (on that device where it can); the
    manager moves it there in any case. Until a footprint for `key` has been
    measured, admission predicts from `expected_bytes` (weights plus working
    memory), of which `working_bytes` is the working memory, or else from the
    size of `checkpoint`.
    """

    key: str
    load: Callable[[str], Any]
    expected_bytes: int | None = None
    checkpoint: Path | None = None
    pinned: bool = False
    working_bytes: int = 0
