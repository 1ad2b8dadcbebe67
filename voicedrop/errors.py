"""The error hierarchy: whether a retry could help is told by the type.

Every error that ends a job is either a PermanentError (bad input, a bad model
file, a model that can never fit) or a TransientError (out of memory, disk
full, a share that went offline). `except TransientError` catches exactly the
errors worth retrying. The executor catches them at the job boundary and
writes `code`, `message`, `field` and the kind into the report.
"""

from __future__ import annotations

import re
from typing import Literal

# terminal control sequences (CSI such as torch's "\x1b[1m", OSC) and other C0 controls
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """Text fit for a report and a terminal: libraries' colour codes and other control
    characters removed (tabs and newlines kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class VoicedropError(Exception):
    """Base of every error voicedrop reports; concrete errors are permanent or transient."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        message = plain(message)  # often carries a library's words: no escape codes
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    @property
    def kind(self) -> Literal["permanent", "transient"]:
        return "transient" if isinstance(self, TransientError) else "permanent"


class PermanentError(VoicedropError):
    """Retrying the same job cannot help."""


class TransientError(VoicedropError):
    """Something outside the job went wrong; the same job may succeed later."""

    code = "transient"


class ConfigError(PermanentError):
    """Invalid settings: start-up stops with a message naming key, value and what is allowed."""

    code = "config_invalid"


class ManifestError(PermanentError):
    """The manifest (or a file it references) is unusable as given."""

    code = "manifest_invalid"

    def __init__(
        self, message: str, *, field: str | None = None, problems: list[str] | None = None
    ):
        super().__init__(message, field=field)
        self.problems = problems or [f"{field}: {message}" if field else message]


class StageError(PermanentError):
    """A stage could not do its work for reasons of this job's content."""

    code = "stage_failed"


class ModelFileError(PermanentError):
    """A configured model file is missing, truncated, corrupt, not weights-only, or not
    what its sha256 says: the message names the file."""

    code = "model_invalid"


class EngineUnavailableError(PermanentError):
    """The engine's optional dependencies are not installed."""

    code = "engine_unavailable"


class AlreadyRunningError(PermanentError):
    """Another daemon holds the spool: one daemon per spool."""

    code = "already_running"


class ResidencyError(VoicedropError):
    """The residency manager could not place a model: a family, each member has a kind."""

    code = "residency_failed"


class DoesNotFitError(ResidencyError, PermanentError):
    """A model's predicted footprint exceeds what the device can ever offer."""

    code = "does_not_fit"


class DoesNotFitNowError(ResidencyError, TransientError):
    """Not enough free memory now (others hold it, our models are in use); may fit later."""

    code = "does_not_fit_now"


class CardBusyError(DoesNotFitNowError):
    """Other programs on the card hold the memory a job needs; it would fit without them."""

    code = "card_busy"


class OutOfMemoryError(ResidencyError, TransientError):
    """The device ran out of memory even after the recovery ladder."""

    code = "out_of_memory"


def job_error(exc: BaseException) -> VoicedropError:
    """Any exception that ends a job attempt, as the error its report carries."""
    if isinstance(exc, VoicedropError):
        return exc
    if isinstance(exc, OSError):  # disk full, share gone, I/O error: not the job's fault
        return TransientError(f"I/O error: {exc}", code="io_error")
    return PermanentError(f"{type(exc).__name__}: {exc}", code="internal_error")
