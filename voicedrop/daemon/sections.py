"""What a reload (SIGHUP, `systemctl reload`) does with each section of the configuration:
applies it, or refuses the whole reload naming it. A section in neither list is a bug (a
test says so), so a new section cannot be forgotten again."""

from __future__ import annotations

from voicedrop.config import Settings
from voicedrop.errors import ConfigError

APPLIED_ON_RELOAD = frozenset(
    {"low_vram", "model_roots", "limits", "scheduler", "residency", "retention", "cache",
     "notify", "qc", "voices", "presets", "pronunciations", "models", "engines"}
)  # fmt: skip
RESTART_TO_CHANGE = frozenset(
    {"spool", "state_dir", "device", "watcher", "log_format", "log_level", "metrics", "ray"}
)
HTTP_SIDE = frozenset({"http", "openai"})  # read by the HTTP side itself, not the daemon


def check_reloadable(new: Settings, old: Settings) -> None:
    """ConfigError naming the sections that changed and need a restart."""
    moved = [k for k in sorted(RESTART_TO_CHANGE) if getattr(new, k) != getattr(old, k)]
    if moved:
        raise ConfigError(f"{', '.join(moved)} cannot change on reload: restart instead")
