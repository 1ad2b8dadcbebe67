"""Which job runs next: recovered jobs first, then FIFO, with bounded affinity.

Affinity lets a job whose models are already on the device jump ahead (a
model switch on a small GPU costs seconds), but every job it passes is
charged a skip, and a job skipped `max_skips` times runs next, so nothing
starves. The scheduler only orders; it does no I/O of its own: the caller
supplies each candidate's model keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class Scheduler:
    def __init__(self, *, affinity: bool = True, max_skips: int = 3) -> None:
        self.affinity = affinity
        self.max_skips = max_skips
        self._skips: dict[str, int] = {}

    def pick(
        self,
        queue: Sequence[T],
        name: Callable[[T], str],
        keys: Callable[[T], set[str]],
        resident: set[str],
    ) -> T | None:
        """Choose from `queue` (oldest first); charge a skip to every job passed over."""
        if not queue:
            return None
        names = [name(item) for item in queue]
        live = set(names)
        self._skips = {n: c for n, c in self._skips.items() if n in live}
        chosen = 0
        if self.affinity and resident:
            for i, item in enumerate(queue):
                if any(self._skips.get(n, 0) >= self.max_skips for n in names[:i]):
                    break  # a job ahead has waited enough
                if keys(item) & resident:
                    chosen = i
                    break
        for skipped in names[:chosen]:
            self._skips[skipped] = self._skips.get(skipped, 0) + 1
        self._skips.pop(names[chosen], None)
        return queue[chosen]
