"""Prefetch: read the models the next stage (or the next job) needs into the warm tier.

While a stage computes, one background thread reads the weights the next stage will
acquire from disk into host memory (pinned under CUDA), so that acquire is a
host-to-device copy instead of a load. The residency manager does the tier moves, under
its lock; this thread only decides what to read next and when to stop:

- `want(specs)` replaces the wish list (latest wins: a plan that changed drops stale
  wishes); the thread reads them in order, one at a time;
- only into the warm tier, within its budget, never onto the device: prefetch never
  raises device memory, whatever the policy;
- a model in use, already in memory or being read is left alone; an acquire that needs
  a model being read waits for that read instead of starting a second one;
- a model that fails to load is left on disk: its job's own acquire reports the error;
- `close()` drops the wishes and waits for a read in flight, whose model is discarded.

The thread lives while there is something to read, and is started again by `want()`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from voicedrop.pipeline.modelspec import ModelSpec

if TYPE_CHECKING:  # the manager owns its prefetcher; the prefetcher calls back into it
    from voicedrop.pipeline.residency import ResidencyManager

log = structlog.get_logger(__name__)


class Prefetcher:
    def __init__(self, manager: ResidencyManager) -> None:
        self.manager = manager
        self._wanted: list[ModelSpec] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._busy = False
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def want(self, specs: Sequence[ModelSpec]) -> None:
        """Read these next, in this order (replacing what was wanted before)."""
        with self._cond:
            self._wanted = list({s.key: s for s in specs}.values())
            if self._wanted and self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="voicedrop-prefetch", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing is wanted or being read (tests, benchmarks, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._wanted and not self._busy, timeout)

    def close(self) -> None:
        """Drop the wishes; wait for a read in flight (its model is discarded)."""
        self._stop.set()
        with self._cond:
            self._wanted = []
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        """Read what is wanted, one model at a time; the thread ends when nothing is."""
        while True:
            with self._cond:
                if self._stop.is_set() or not self._wanted:
                    self._thread = None
                    self._cond.notify_all()
                    return
                spec = self._wanted[0]
                keep = frozenset(s.key for s in self._wanted)
                self._busy = True
            try:
                self.manager.warm(spec, keep)
            except Exception:  # never let it escape: the job's acquire loads the model itself
                log.exception("prefetch.failed", model=spec.key)
            finally:
                with self._cond:
                    self._busy = False
                    if self._wanted and self._wanted[0] is spec:
                        self._wanted.pop(0)
                    self._cond.notify_all()
