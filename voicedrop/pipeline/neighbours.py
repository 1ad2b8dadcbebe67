"""A good neighbour on a shared card (`[residency] neighbours = "yield"`).

Workstations run voicedrop beside an editor's NLE, a game, Blender or another model
server. The residency manager keeps `neighbour_headroom_gb` of the card free for them at
admission (its `reserve`), and `NeighbourWatch` reads the card (card.py: NVML, no CUDA
context) a few times a second while voicedrop holds anything on it. When another program
grows into that headroom, what voicedrop holds and is not computing leaves the device
(cached blocks first, then idle models, to the warm tier) within a poll; an idle device
worker whose device context alone is in the way ends (`on_over`). When the others let go
again, the models that were moved are put back. A job that cannot fit beside them waits
for the card (residency.py), its stage saying who holds it, for `card_wait_s`.

Without NVML the watch falls back to the free memory the device reports: anything used
beyond voicedrop's own allocator and a device context counts as the others'.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from voicedrop.card import Card, CardView, NvmlCard, card_status
from voicedrop.config import GB, Settings
from voicedrop.pipeline.device import Device
from voicedrop.pipeline.tiers import TierTable

if TYPE_CHECKING:
    from voicedrop.pipeline.residency import ResidencyManager

log = structlog.get_logger(__name__)
POLL_S = 0.25  # a neighbour's growth is answered within a second
CONTEXT_BYTES = int(0.75 * GB)  # without NVML: used memory a device context may explain


class CardRoom:
    """The moves the watch asks of the residency manager, under the manager's lock."""

    def __init__(
        self,
        device: Device,
        tiers: TierTable,
        lock: Any,
        warm_tier: bool,
        keep_host: Callable[[], bool],
    ) -> None:
        self.device, self.tiers, self.lock = device, tiers, lock
        self.warm_tier, self.keep_host = warm_tier, keep_host

    def give(self, excess: int, why: str) -> tuple[list[str], int]:
        """Give `excess` bytes of the device back: cached blocks first, then idle models by
        value (pinned ones last). Returns the models moved and the bytes still over."""
        moved: list[str] = []
        entries = self.tiers.entries
        with self.lock:
            before = self.device.memory().reserved
            self.device.release_cached()
            while before - self.device.memory().reserved < excess:
                victim = self.tiers.victim(frozenset()) or next(
                    (e for e in entries.values() if e.tier == "device" and not e.in_use), None
                )
                if victim is None:
                    break
                self.tiers.leave_device(victim, "demote" if self.warm_tier else "drop", why)
                self.device.release_cached()
                moved.append(victim.spec.key)
            return moved, max(0, excess - (before - self.device.memory().reserved))

    def take_back(self, keys: Sequence[str], room: int) -> list[str]:
        """Put models given away back on the device while `room` bytes allow, if they are
        still in the warm tier and idle; returns those put back."""
        back: list[str] = []
        with self.lock:
            for key in keys:
                entry = self.tiers.entries.get(key)
                if entry is None or entry.tier != "host" or entry.in_use:
                    continue
                if entry.nbytes > room:
                    break
                self.tiers.place(entry, self.keep_host())
                room -= entry.nbytes
                back.append(key)
        return back

    def busy(self) -> bool:
        """Whether any model is on the device or in use."""
        with self.lock:
            return any(e.tier == "device" or e.in_use for e in self.tiers.entries.values())


class NeighbourWatch:
    """Reads the card while voicedrop holds anything on it (`always`: for as long as this
    process lives — a device worker's context is on the card) and keeps `headroom` free."""

    def __init__(
        self,
        manager: ResidencyManager,
        card: Card | None,
        headroom: int,
        ours: frozenset[int],
        *,
        always: bool = False,
        on_over: Callable[[], None] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.manager, self.card, self.headroom, self.ours = manager, card, headroom, ours
        self.always, self.on_over, self.poll_s = always, on_over, poll_s
        self.given: list[str] = []  # models moved for the others, to put back later
        self.turns = 0  # polls, read or not
        self.last: CardView | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicedrop-neighbours", daemon=True)

    def start(self) -> NeighbourWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.turns += 1
            if self.always or self.manager.room.busy():
                try:
                    self.check()
                except Exception:  # a reading must never end the watch
                    log.exception("neighbours.check_failed")

    def check(self) -> None:
        """One reading of the card, and what it asks: make room, or take room back."""
        others, excess, who = self._reading()
        self.manager.who_holds = who
        self.manager.card_changed.set()
        room = self.manager.room
        if others and excess > 0:
            moved, still = room.give(excess, f"yield to {who}")
            self.given += [k for k in moved if k not in self.given]
            if moved:
                log.warning("residency.yielded", models=moved, holders=who, bytes=excess)
            if still > 0 and self.on_over is not None and not room.busy():
                self.on_over()  # only the device context is left in the way
        elif self.given and excess < 0:
            back = room.take_back(self.given, -excess)
            self.given = [k for k in self.given if k not in back]
            if back:
                log.info("residency.reclaimed", models=back)

    def describe(self) -> dict[str, Any]:
        """For status: the last reading of the card (NVML), or why there is none."""
        return card_status(self.card, self.last, self.ours, self.headroom)

    def _reading(self) -> tuple[int, int, str]:
        """The others' bytes, how far we are into the headroom kept for them, and who."""
        view = self.last = self.card.view() if self.card is not None else None
        if view is not None:
            others = view.others(self.ours)
            held = sum(h.used for h in others)
            excess = view.held_by(self.ours) + held + self.headroom - view.total
            who = "; ".join(h.describe() for h in others[:3])
            return held, excess, who or "other programs hold it"
        mem = self.manager.device.memory()
        held = max(0, mem.total - mem.free - mem.reserved)
        if held <= CONTEXT_BYTES:
            held = 0
        return held, self.headroom - mem.free, f"other programs hold {held / GB:.2f} GB"


def yields(settings: Settings, device: Device) -> bool:
    """Whether voicedrop keeps room for the other programs on its card: under
    `[residency] neighbours = "yield"`, on a CUDA card (host memory is the OS's to share)."""
    return settings.residency.neighbours == "yield" and device.name.startswith("cuda")


def watch_card(
    settings: Settings,
    manager: ResidencyManager,
    *,
    always: bool,
    on_over: Callable[[], None] | None = None,
) -> NeighbourWatch | None:
    """Start watching the card for the process that holds it (None where it yields to
    nobody), keeping free what the manager's admission reserves; `manager.close()` stops
    it."""
    if not yields(settings, manager.device):
        return None
    ours = frozenset({os.getpid()})
    watch = NeighbourWatch(
        manager, NvmlCard(), manager.reserve, ours, always=always, on_over=on_over
    )
    manager.watch = watch
    return watch.start()
