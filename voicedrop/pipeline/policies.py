"""Residency policies: what happens to a model after its block, and how much may stay.

`low` is LOW_VRAM=true (nothing stays on the GPU after its stage),
`normal` is LOW_VRAM=false (models stay), `budget` keeps models while they fit
under a byte budget and lets the manager evict by score when a load needs room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from voicedrop.config import GB, Settings
from voicedrop.pipeline.device import MemoryInfo


class Policy(Protocol):
    @property
    def name(self) -> str: ...

    def keeps_after_use(self) -> bool: ...

    def budget(self, mem: MemoryInfo, resident: int) -> int | None:
        """Bytes our models may hold on the device, or None for 'whatever fits'."""
        ...


@dataclass(frozen=True)
class LowPolicy:
    name = "low"

    def keeps_after_use(self) -> bool:
        return False

    def budget(self, mem: MemoryInfo, resident: int) -> int | None:
        return None


@dataclass(frozen=True)
class NormalPolicy:
    name = "normal"

    def keeps_after_use(self) -> bool:
        return True

    def budget(self, mem: MemoryInfo, resident: int) -> int | None:
        return None


@dataclass(frozen=True)
class BudgetPolicy:
    """A fixed budget in bytes, or `None` for auto: free memory plus our own, minus headroom."""

    limit: int | None
    headroom: int
    name = "budget"

    def keeps_after_use(self) -> bool:
        return True

    def budget(self, mem: MemoryInfo, resident: int) -> int | None:
        if self.limit is not None:
            return self.limit
        return max(0, mem.reusable + resident - self.headroom)


def policy_from_settings(settings: Settings) -> Policy:
    headroom = int(settings.residency.headroom_gb * GB)
    match settings.policy:
        case "low":
            return LowPolicy()
        case "budget":
            budget = settings.residency.budget_gb
            return BudgetPolicy(None if budget == "auto" else int(budget * GB), headroom)
        case _:
            return NormalPolicy()
