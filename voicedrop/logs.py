"""structlog set-up: JSON lines for journald and machines, a console renderer for people.

When the daemon writes JSON (not on a terminal, or `log_format = "json"`), every line the
process writes must be one JSON object, or journald's and a collector's parsing break.
So besides structlog's own events: the standard library's log records (uvicorn,
python-multipart, watchdog, the engines' libraries) become structlog events, Python
warnings go through logging, progress bars are switched off, an uncaught exception in
any thread is one event with its traceback, and whatever a library still prints to
stdout or stderr is wrapped line by line into an event (`process.stdout`/`stderr`).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, TextIO

import structlog

# Read by the libraries when they create a bar: tqdm's own switch, and the Hugging Face
# one that transformers and huggingface_hub honour.
QUIET_PROGRESS = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class _DropStopRace(logging.Filter):
    """watchdog warns when its emitter is asked for events while stopping: harmless noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


class _ToStructlog(logging.Handler):
    """Libraries' stdlib log records as structlog events: the log stays one JSON object per
    line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = structlog.get_logger(record.name)
            fields = {"logger": record.name}
            if record.exc_info:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            event.log(record.levelno, record.getMessage(), **fields)
        except Exception:  # a log line must never take the process down
            self.handleError(record)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> bool:
    """Set structlog up; route the standard library's records and warnings into it.
    Returns whether the output is JSON."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.getLogger("watchdog.observers.inotify").addFilter(_DropStopRace())
    for name in ("", "uvicorn"):  # the root logger, and uvicorn's (it does not propagate)
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
            logger.addHandler(_ToStructlog(logging.WARNING))
    logging.getLogger("uvicorn").propagate = False
    logging.captureWarnings(True)
    return as_json


class _LineEvents(io.TextIOBase):
    """A text stream whose every line becomes a structlog event: what a library prints
    (to stdout or stderr) after the daemon took them over."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text.replace("\r", "\n")  # progress redraws: a line each
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                structlog.get_logger("process").warning(f"process.{self.name}", text=line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        if line.strip():
            structlog.get_logger("process").warning(f"process.{self.name}", text=line)


def setup_daemon(fmt: str, level: str) -> bool:
    """Logging for a long-running process (`run`, `serve`): `configure`, and when the
    output is JSON, `take_over_streams`. Returns whether it is JSON."""
    as_json = configure(fmt, level)
    if as_json:
        take_over_streams()
    return as_json


def take_over_streams() -> None:
    """For a daemon writing JSON (structlog already writes to the real stderr): the
    Python-level stdout and stderr become line-wrapping event streams; uncaught
    exceptions (main or any thread) are one event each; progress bars are off."""
    for key, value in QUIET_PROGRESS.items():
        os.environ.setdefault(key, value)
    if isinstance(sys.stderr, _LineEvents):
        return
    sys.stdout = _LineEvents("stdout")
    sys.stderr = _LineEvents("stderr")

    def uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, exc, tb))
        structlog.get_logger("process").critical("process.crashed", exception=text)

    def thread_uncaught(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        name = args.thread.name if args.thread is not None else None
        structlog.get_logger("process").error("thread.crashed", thread=name, exception=text)

    sys.excepthook = uncaught
    threading.excepthook = thread_uncaught
