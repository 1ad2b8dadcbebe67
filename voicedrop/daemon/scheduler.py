"""Which job runs next: by priority, then FIFO, with bounded affinity.

A job of a higher priority goes first (someone waits for it over HTTP). Among the jobs
of the highest priority, affinity lets one whose models are already on the device jump
ahead (a model switch on a small GPU costs seconds): first a job whose models are all
there, else one that shares one of them. Every older job passed over is timed, and one
passed for affinity is also charged a skip; a job skipped `max_skips` times, or waiting
`max_wait_s` since it was first passed, runs next whatever its priority, so nothing
starves. The scheduler only orders; it does no I/O of its own: the caller supplies each
candidate's model keys and priority, and the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeVar

T = TypeVar("T")


class Scheduler:
    def __init__(
        self,
        *,
        affinity: bool = True,
        max_skips: int = 3,
        max_wait_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.affinity = affinity
        self.max_skips = max_skips
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._skips: dict[str, int] = {}
        self._passed_since: dict[str, float] = {}  # when a job was first passed over
        self.passed_by = 0  # how many jobs went ahead of the last one picked

    def pick(
        self,
        queue: Sequence[T],
        name: Callable[[T], str],
        keys: Callable[[T], set[str]],
        resident: set[str],
        elsewhere: AbstractSet[str] = frozenset(),
        priority: Callable[[T], int] = lambda _item: 0,
    ) -> T | None:
        """Choose from `queue` (oldest first) for a runner holding `resident`; every older
        job passed over is timed, and charged a skip if it was passed for affinity.
        `elsewhere`: models other runners (cluster workers) hold: a job they hold all of is
        left to them, and passing it costs it time, not a skip."""
        if not queue:
            return None
        names = [name(item) for item in queue]
        live = set(names)
        self._skips = {n: c for n, c in self._skips.items() if n in live}
        self._passed_since = {n: t for n, t in self._passed_since.items() if n in live}
        now = self.clock()
        chosen = self._choose(queue, names, keys, resident, elsewhere, priority, now)
        top = priority(queue[chosen])
        for item, skipped in zip(queue[:chosen], names[:chosen], strict=True):
            if priority(item) >= top and not _held(keys(item), elsewhere):
                self._skips[skipped] = self._skips.get(skipped, 0) + 1
            self._passed_since.setdefault(skipped, now)
        self.passed_by = self._skips.pop(names[chosen], 0)
        self._passed_since.pop(names[chosen], None)
        return queue[chosen]

    def preview(
        self,
        queue: Sequence[T],
        name: Callable[[T], str],
        keys: Callable[[T], set[str]],
        resident: set[str],
        priority: Callable[[T], int] = lambda _item: 0,
    ) -> T | None:
        """What `pick` would choose now, charging nothing (what to prefetch for)."""
        if not queue:
            return None
        names = [name(item) for item in queue]
        chosen = self._choose(queue, names, keys, resident, set(), priority, self.clock())
        return queue[chosen]

    def _choose(
        self,
        queue: Sequence[T],
        names: list[str],
        keys: Callable[[T], set[str]],
        resident: set[str],
        elsewhere: AbstractSet[str],
        priority: Callable[[T], int],
        now: float,
    ) -> int:
        """Among the jobs of the highest priority, the one affinity prefers — but never one
        newer than a job that has waited enough."""
        waited = next((i for i, n in enumerate(names) if self._waited_enough(n, now)), None)
        eligible = range(len(queue) if waited is None else waited + 1)
        top = max(priority(queue[i]) for i in eligible)
        first = [i for i in eligible if priority(queue[i]) == top]
        if not self.affinity or not (resident or elsewhere):
            return first[0]
        # a job that needs nothing loaded; then one that shares a model; then (in a
        # cluster) one no other worker holds every model of; else the oldest
        passes = (
            lambda k: bool(k) and k <= resident,
            lambda k: bool(k & resident) and not _held(k, elsewhere),
            lambda k: not _held(k, elsewhere),
        )
        for fits in passes:
            for i in first:
                if fits(keys(queue[i])):
                    return i
        return first[0]

    def _waited_enough(self, name: str, now: float) -> bool:
        if self._skips.get(name, 0) >= self.max_skips:
            return True
        since = self._passed_since.get(name)
        return since is not None and now - since >= self.max_wait_s


def _held(keys: set[str], elsewhere: AbstractSet[str]) -> bool:
    return bool(keys) and keys <= elsewhere
