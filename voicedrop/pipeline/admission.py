"""Admission: whether a set of models may go on the device now, and what must leave first.

The residency manager asks before it places the models of a block: their weights
not yet on the device plus the largest working memory any of them needs, plus
headroom, must be free, and the weights must fit the policy's budget. Admission
predicts those bytes (measured footprints first, then the spec's own figures, then
the checkpoint's size), evicts idle models by score until the set fits, and
refuses with a typed error when it cannot: `DoesNotFitError` when the weights can
never fit this card or budget (permanent), `DoesNotFitNowError` when others hold
the memory (transient). It also measures each block's peak, so that the next
prediction is learnt rather than guessed.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import NoReturn

import structlog

from voicedrop.config import GB
from voicedrop.errors import CardBusyError, DoesNotFitError, DoesNotFitNowError
from voicedrop.pipeline.device import Device
from voicedrop.pipeline.footprints import FootprintStore
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.policies import Policy
from voicedrop.pipeline.tiers import Entry, TierTable

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Block:
    """One acquire_all block: its members and the peak of device memory while it runs.

    `others` is the bytes on the device that are not this block's members; the
    block's footprint is its peak minus them. A nested block saves this block's
    running peak before it resets the device counter, so nothing is lost."""

    members: list[Entry]
    others: int
    peak: int


@dataclass
class Admission:
    device: Device
    policy: Policy
    tiers: TierTable
    headroom: int = 0
    footprints: FootprintStore = field(default_factory=lambda: FootprintStore(None))
    reserve: int = 0  # kept free for the other programs on the card (neighbours = "yield")
    _blocks: list[Block] = field(default_factory=list)

    # ---- prediction ------------------------------------------------------------------------

    def predict(self, spec: ModelSpec) -> int:
        """Bytes a use of `spec` is expected to take on the device: weights + working memory."""
        measured = self.footprints.get(spec.key)
        entry = self.tiers.entries.get(spec.key)
        if measured is not None:
            return measured.peak
        if spec.expected_bytes is not None:
            return spec.expected_bytes
        if entry is not None and entry.nbytes:
            return entry.nbytes
        if spec.checkpoint is not None and spec.checkpoint.exists():
            return int(spec.checkpoint.stat().st_size * 1.2)
        return 0

    def weights(self, entry: Entry) -> int:
        """The weights' bytes: known once loaded, else measured earlier, else estimated."""
        if entry.nbytes:
            return entry.nbytes
        seen = self.footprints.get(entry.spec.key)
        if seen is not None and seen.weights is not None:
            return seen.weights
        return max(0, self.predict(entry.spec) - entry.spec.working_bytes)

    def working(self, entry: Entry) -> int:
        seen = self.footprints.get(entry.spec.key)
        if seen is None:
            return entry.spec.working_bytes
        return max(0, seen.peak - self.weights(entry))

    # ---- making room -------------------------------------------------------------------------

    def make_room(self, fresh: list[Entry]) -> None:
        """Evict by score until the set's incoming weights plus its working memory (plus
        headroom) fit on the device and the weights fit the policy's budget.

        Only here and in the OOM ladder is the allocator cache emptied (not on
        every release), and garbage is collected only as a last resort before
        refusing: a full collection costs a tenth of a second with torch loaded.
        """
        incoming = sum(self.weights(e) for e in fresh if e.tier != "device")
        working = max(self.working(e) for e in fresh)
        keys = frozenset(e.spec.key for e in fresh)
        need = self._clamp(fresh, incoming, working)
        evicted = collected = False
        while True:
            mem = self.device.memory()
            resident = self.tiers.device_bytes()
            budget = self.policy.budget(mem, resident)
            on_device = need + self.headroom + self.reserve <= mem.reusable
            if on_device and (budget is None or resident + incoming <= budget):
                break
            victim = self.tiers.victim(exclude=keys)
            if victim is not None:
                self.tiers.leave_device(
                    victim, "evict", f"make room for {' + '.join(sorted(keys))}"
                )
                evicted = True
            elif not collected:  # a model kept alive only by a reference cycle
                gc.collect()
                self.device.release_cached()
                collected = True
            else:
                self._refuse(fresh, need, working, mem.reusable, mem.total, budget)
        if evicted:
            self.device.release_cached()

    def _clamp(self, fresh: list[Entry], incoming: int, working: int) -> int:
        """The bytes to make free: weights + working memory, but never more than the card
        can offer us. Working memory is attributed to every model of the set it was
        measured in, so a new combination may be predicted to need more than the card
        has although it fits: then we evict everything idle and try, and the OOM ladder
        is the safety net. Only the weights decide that a set can never fit."""
        need = incoming + working
        entries = self.tiers.entries.values()
        held = sum(e.nbytes for e in entries if e.in_use and e.tier == "device")
        spare = self.headroom + self.reserve
        ceiling = self.device.memory().total - spare - held  # held: ours and outer blocks'
        if incoming <= ceiling < need:
            log.info(
                "residency.tight", models=[e.spec.key for e in fresh], need=need, ceiling=ceiling
            )
            return ceiling
        return need

    def _refuse(
        self,
        fresh: list[Entry],
        need: int,
        working: int,
        free: int,
        total: int,
        budget: int | None,
    ) -> NoReturn:
        incoming = sum(self.weights(e) for e in fresh if e.tier != "device")
        limit = f", budget {budget / GB:.2f} GB" if budget is not None else ""
        others = self.device.other_processes_bytes()
        if others:
            limit += f"; other processes hold {others / GB:.2f} GB"
        spare = self.headroom + self.reserve
        names = " + ".join(f"'{e.spec.key}'" for e in fresh)
        msg = (
            f"model {names} does not fit: needs {incoming / GB:.2f} GB of weights + "
            f"{working / GB:.2f} GB working memory + {spare / GB:.2f} GB headroom, "
            f"{free / GB:.2f} GB free of {total / GB:.2f} GB{limit}"
        )
        held = sum(self.weights(e) for e in fresh if e.tier == "device")
        if held + incoming + spare > total or (budget is not None and held + incoming > budget):
            raise DoesNotFitError(msg)
        if others and need + spare <= free + others:  # it fits once the others let go
            raise CardBusyError(msg)
        raise DoesNotFitNowError(msg)

    # ---- measuring a block ---------------------------------------------------------------------

    def open_block(self, members: list[Entry]) -> Block:
        if self._blocks:  # keep the outer block's peak so far before the counter resets
            outer = self._blocks[-1]
            outer.peak = max(outer.peak, self.device.peak_allocated())
        allocated = self.device.memory().allocated
        self.device.reset_peak()
        block = Block(members, others=0, peak=allocated)
        self.rebase(block)
        self._blocks.append(block)
        return block

    def rebase(self, block: Block) -> None:
        """Count what is on the device now and is not the block's own as someone else's
        (after the OOM ladder evicted the others, the measurement starts again)."""
        ours = sum(e.nbytes for e in block.members if e.tier == "device")
        block.others = self.device.memory().allocated - ours

    def close_block(self, block: Block) -> None:
        """Record each member's footprint: its weights plus the block's working memory."""
        peak = max(block.peak, self.device.peak_allocated())
        self._blocks.remove(block)
        if self._blocks:
            self._blocks[-1].peak = max(self._blocks[-1].peak, peak)
        placed = [e for e in block.members if e.tier == "device"]  # not those that failed
        working = max(0, peak - block.others - sum(e.nbytes for e in placed))
        for entry in placed:
            entry.last_peak = entry.nbytes + working
            self.footprints.record(entry.spec.key, entry.last_peak, entry.nbytes)
