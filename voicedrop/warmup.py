"""Imports made ahead of their first use, on a thread, so the first job is as quick as the
next: the post stage's libraries (loudness, resampling, the limiter, the dub track) in the
daemon, the stream encoders in the HTTP server. Readiness never waits for them; a
module that fails to import is left for its real use to report.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger(__name__)

POST_STAGE = ("soxr", "pyloudnorm", "scipy.ndimage", "voicedrop.pipeline.dub")  # soonest first
ENCODERS = ("av", "soxr")


class Warmup:
    """start() imports `modules` on a thread of its own, then calls `done`; close() waits
    for it. A job that needs a module still being imported waits for that import."""

    def __init__(self, modules: Sequence[str], done: Callable[[], None] = lambda: None) -> None:
        self.modules = modules
        self.done = done
        self.finished = False
        self._thread = threading.Thread(target=self._run, name="voicedrop-warmup", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        for name in self.modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # its real use reports it, where it matters
                log.debug("warmup.import_failed", module=name, error=str(exc))
        self.finished = True
        log.debug("warmup.done", seconds=round(time.monotonic() - started, 3))
        self.done()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
