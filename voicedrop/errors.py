"""The error hierarchy.

Every error that can end a job says whether retrying could help (transient:
out of memory, disk full, a share that went offline) or not (permanent: bad
input). The executor catches them at the job boundary and writes `code`,
`message`, `field` and the kind into the report.
"""

from __future__ import annotations

from typing import Literal


class VoicedropError(Exception):
    code = "error"
    permanent = True

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    @property
    def kind(self) -> Literal["permanent", "transient"]:
        return "permanent" if self.permanent else "transient"


class ConfigError(VoicedropError):
    """Invalid settings: start-up stops with a message naming key, value and what is allowed."""

    code = "config_invalid"


class ManifestError(VoicedropError):
    """The manifest (or a file it references) is unusable as given."""

    code = "manifest_invalid"

    def __init__(
        self, message: str, *, field: str | None = None, problems: list[str] | None = None
    ):
        super().__init__(message, field=field)
        self.problems = problems or [f"{field}: {message}" if field else message]


class StageError(VoicedropError):
    """A stage could not do its work for reasons of this job's content."""

    code = "stage_failed"


class TransientError(VoicedropError):
    """Something outside the job went wrong; the same job may succeed later."""

    code = "transient"
    permanent = False


class ResidencyError(TransientError):
    """The residency manager could not place a model on the device."""

    code = "residency_failed"


class OutOfMemoryError(ResidencyError):
    """The device ran out of memory even after the recovery ladder."""

    code = "out_of_memory"


class DoesNotFitError(ResidencyError):
    """A model's predicted footprint exceeds what the device can ever offer."""

    code = "does_not_fit"
    permanent = True
