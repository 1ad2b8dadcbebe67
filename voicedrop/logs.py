"""structlog set-up: JSON lines for journald and machines, a console renderer for people."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


class _DropStopRace(logging.Filter):
    """watchdog warns when its emitter is asked for events while stopping: harmless noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


class _ToStructlog(logging.Handler):
    """Libraries' stdlib log records (uvicorn's errors) as structlog events: the log stays
    one JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        event = structlog.get_logger(record.name)
        fields = {"logger": record.name}
        if record.exc_info:
            fields["exception"] = logging.Formatter().formatException(record.exc_info)
        event.log(record.levelno, record.getMessage(), **fields)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
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
    server = logging.getLogger("uvicorn")
    if not any(isinstance(h, _ToStructlog) for h in server.handlers):
        server.addHandler(_ToStructlog(logging.WARNING))
    server.propagate = False
