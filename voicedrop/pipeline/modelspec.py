"""What an engine tells the residency manager about a model: how to build it, what it needs.

Engines depend on this, not on the manager, so they stay testable on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voicedrop.pipeline.precision import Card, Rule, half

Tier = Literal["disk", "host", "device"]


@dataclass(frozen=True)
class Placement:
    """Where a load builds a model's tensors now, and where the model will compute.

    The two differ when a model is read into the warm tier (built in host memory, for a
    GPU later): its precision must be the one it will compute in, whichever path loaded
    it, or a prefetched model would run in float32 at twice the memory while a directly
    loaded one is float16 (and two models of one stage would disagree).
    """

    build_on: str  # a torch device string: "cpu" for host memory, or the device itself
    runs_on: str  # the device it will compute on ("cuda:0", "cpu")
    card: Card | None = None  # that device, when it is a CUDA card: its name and capability

    @property
    def cuda(self) -> bool:
        return self.runs_on.startswith("cuda")

    def half(self, rule: Rule) -> bool:
        """Whether a model under the library's `rule` computes in float16 there."""
        return half(self.card, rule)


CPU = Placement("cpu", "cpu")


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what it is expected to need.

    `load(placement)` builds the model (on `placement.build_on` where it can, in the
    precision of `placement.runs_on`); the manager moves it in any case. Until a
    footprint for `key` has been
    measured, admission predicts from `expected_bytes` (weights plus working
    memory), of which `working_bytes` is the working memory, or else from the
    size of `checkpoint`.
    """

    key: str
    load: Callable[[Placement], Any]
    expected_bytes: int | None = None
    checkpoint: Path | None = None
    pinned: bool = False
    working_bytes: int = 0
