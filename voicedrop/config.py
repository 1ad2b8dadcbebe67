"""One frozen, validated Settings object: defaults < config.toml < environment < CLI.

Loaded once in the entry point and passed down; nothing reads the environment
at import time. Any invalid value stops start-up with a ConfigError that names
the key, the value, where it came from and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from voicedrop.config_layers import ENV_PREFIX, describe, env_overrides, flatten, merge, read_toml
from voicedrop.errors import ConfigError

GB = 1024**3
# Engines for drills and tests (no speech worth hearing): they run when a job names them,
# and are listed to users only with `[http] drills`.
DRILL_ENGINES = frozenset({"noop", "tape"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Section):
    max_text_chars: int = Field(5000, ge=1, le=1_000_000)
    max_manifest_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    max_reference_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(3, ge=1, le=100)
    retry_delay_s: float = Field(30.0, ge=0, le=86400)
    max_script_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_cue_s: float = Field(30.0, gt=0, le=3600)
    max_script_s: float = Field(4 * 3600.0, gt=0, le=24 * 3600)  # a script's timeline
    max_stretch: float = Field(1.25, ge=1.0, le=2.0)


class Watcher(_Section):
    mode: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    scan_interval_s: float = Field(30.0, gt=0, le=86400)
    stable_delay_s: float = Field(2.0, ge=0, le=3600)
    reference_wait_s: float = Field(60.0, ge=0, le=86400)


class Scheduler(_Section):
    affinity: bool = True
    max_skips: int = Field(3, ge=0, le=1000)
    max_wait_s: float = Field(60.0, ge=0, le=86400)


class Residency(_Section):
    policy: Literal["auto", "low", "normal", "budget"] = "auto"
    budget_gb: float | Literal["auto"] = "auto"
    warm_tier: bool = True
    warm_budget_gb: float = Field(8.0, ge=0)
    headroom_gb: float = Field(0.5, ge=0)
    keep_alive_s: float | None = Field(None, gt=0, le=30 * 86400)
    prefetch: bool = True
    worker: Literal["inline", "process"] = Field(
        "process",
        description="where models and the device live: in a device worker process that exits "
        "when idle, or in the daemon itself",
    )
    worker_idle_s: float = Field(
        300.0,
        ge=-1,
        le=30 * 86400,
        description="the worker exits after this long idle; 0: after each job; -1: never",
    )
    neighbours: Literal["yield", "ignore"] = Field(
        "yield",
        description="yield: keep neighbour_headroom_gb of the card free for other programs "
        "and make room when they grow; ignore: count them only at admission",
    )
    neighbour_headroom_gb: float = Field(1.0, ge=0, le=1024)
    card_wait_s: float = Field(
        600.0, ge=0, le=86400, description="how long a job waits for a card others hold"
    )
    preload: list[str] = Field(
        default_factory=list, description="models loaded once the daemon is ready (keys)"
    )

    @field_validator("budget_gb")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if isinstance(v, float) and v <= 0:
            raise ValueError("must be a positive number of GB or 'auto'")
        return v


class Http(_Section):
    """`[http]`: the HTTP API beside the drop folder (`run --http`, `serve`)."""

    listen: str | None = Field(
        None, pattern=r"^[^\s:]*:\d{1,5}$", description="HOST:PORT; off when unset"
    )
    token: str | None = Field(
        None, min_length=16, description="bearer token; required to listen beyond loopback"
    )
    max_queue: int = Field(1000, ge=1, description="jobs in the inbox before 429")
    max_wait_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="the longest ?wait=, and how long a request someone waits for may stay "
        "queued before it is withdrawn",
    )
    priority: int = Field(
        50, ge=-100, le=100, description="the priority of requests someone waits for"
    )
    reference_min_s: float = Field(1.0, ge=0, description="shortest uploaded reference")
    reference_max_s: float = Field(60.0, gt=0, description="longest uploaded reference")
    drills: bool = Field(
        False,
        description="list the drill engines (noop, tape) among /v1 models, voices and the "
        "dashboard's choices; jobs may name them either way",
    )
    keep_sent_audio: bool = Field(
        False,
        description="keep a /v1/audio/speech job's audio once its client has it (else only "
        "its report; a request with an Idempotency-Key keeps it until retention)",
    )


class OpenAI(_Section):
    """`[openai]`: how `/v1/audio/speech` names map to engines and configured voices."""

    models: dict[str, str] = Field(
        default_factory=lambda: {
            "tts-1": "espeak",
            "tts-1-hd": "espeak",
            "gpt-4o-mini-tts": "espeak",
        },
        description="OpenAI model name -> TTS engine (an engine's own name works too)",
    )
    voices: dict[str, str] = Field(
        default_factory=dict, description="OpenAI voice name -> a configured voice"
    )
    default_voice: dict[str, str] = Field(
        default_factory=dict,
        description="engine -> the configured voice an unmapped OpenAI voice name gets "
        "(default: the engine's first configured voice)",
    )


class Keep(_Section):
    """How long finished jobs of one origin are kept (outbox and failed alike)."""

    max_age_s: float | None = Field(None, gt=0, description="removed this long after they end")
    max_jobs: int | None = Field(None, ge=1, description="at most this many, the oldest go")


class Retention(_Section):
    """`[retention]`: finished jobs removed by age and count, per origin. Jobs made through
    the HTTP API go after a day by default; drop-folder jobs are kept."""

    interval_s: float = Field(300.0, gt=0, le=86400, description="how often the daemon looks")
    http: Keep = Field(default_factory=lambda: Keep(max_age_s=86400.0, max_jobs=None))
    drop: Keep = Field(default_factory=Keep)  # type: ignore[arg-type]


class Cache(_Section):
    """`[cache]`: clips rendered before (a script's cues), kept to be used again."""

    clips_gb: float = Field(2.0, ge=0, description="the clip cache's size; 0: off")


class QC(_Section):
    """`[qc]`: what a job's `qc` block checks with."""

    asr_dir: Path | None = Field(
        None,
        description="a local Whisper (transformers layout) for the word error rate; "
        "default: [engines.f5tts] asr_dir",
    )


class Notify(_Section):
    """`[notify]`: each finished job's report POSTed to a URL, signed (HMAC-SHA256)."""

    webhook: str | None = Field(
        None, pattern=r"^https?://\S+$", description="http(s) URL; off when unset"
    )
    secret: str | None = Field(None, min_length=16, description="signs each delivery")
    max_attempts: int = Field(8, ge=1, le=100, description="tries, with backoff, per job")
    timeout_s: float = Field(10.0, gt=0, le=300)


class MetricsSettings(_Section):
    """`[metrics]`: Prometheus metrics in a file, for node_exporter's textfile collector."""

    textfile: Path | None = Field(None, description="e.g. /var/lib/node_exporter/voicedrop.prom")
    interval_s: float = Field(15.0, gt=0, le=3600)


class RaySettings(_Section):
    """`[ray]`: run jobs on Ray actors, one per GPU (`voicedrop run --ray ADDRESS`)."""

    address: str | None = Field(
        None,
        description='"auto" (a cluster started with `ray start`), "HOST:PORT", '
        '"ray://HOST:PORT", or "local" (a private cluster in this process); off when unset',
    )
    actors: int | None = Field(None, ge=1, le=256, description="default: one per GPU")
    gpus_per_actor: float = Field(1.0, ge=0, le=8)
    policies: list[Literal["auto", "low", "normal", "budget"]] = Field(
        default_factory=list, description="residency policy per actor, in order"
    )
    routing: Literal["resident", "round-robin"] = "resident"
    max_restarts: int = Field(3, ge=-1, le=1000)
    local_gpus: int = Field(0, ge=0, le=64, description='fake GPUs of address = "local"')
    local_cpus: int | None = Field(None, ge=1, le=1024)


SHA256 = r"^[0-9a-fA-F]{64}$"


class Voice(_Section):
    """A named voice of one TTS engine: the engine's own voice id (espeak's language,
    an XTTS built-in speaker) and/or reference recordings with their text (cloning)."""

    engine: str = "espeak"
    engine_voice: str | None = None
    reference: Path | list[Path] | None = None
    reference_text: str | None = None

    @property
    def references(self) -> list[Path]:
        ref = self.reference
        return [] if ref is None else list(ref) if isinstance(ref, list) else [ref]


class ConvertModel(_Section):
    """A named voice-conversion model; manifests name it, never its path."""

    engine: str
    path: Path | None = None
    index: Path | None = None
    sha256: str | None = Field(None, pattern=SHA256)
    options: dict[str, float | int | str | bool] = Field(default_factory=dict)


class Settings(_Section):
    spool: Path = Path("spool")
    state_dir: Path | None = None
    low_vram: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Model and voice files must lie under one of these (symlinks resolved).
    model_roots: list[Path] = Field(default_factory=lambda: [Path("models")])
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    limits: Limits = Field(default_factory=Limits)  # type: ignore[arg-type]
    watcher: Watcher = Field(default_factory=Watcher)  # type: ignore[arg-type]
    scheduler: Scheduler = Field(default_factory=Scheduler)  # type: ignore[arg-type]
    residency: Residency = Field(default_factory=Residency)  # type: ignore[arg-type]
    http: Http = Field(default_factory=Http)  # type: ignore[arg-type]
    openai: OpenAI = Field(default_factory=OpenAI)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)  # type: ignore[arg-type]
    retention: Retention = Field(default_factory=Retention)  # type: ignore[arg-type]
    cache: Cache = Field(default_factory=Cache)  # type: ignore[arg-type]
    notify: Notify = Field(default_factory=Notify)  # type: ignore[arg-type]
    qc: QC = Field(default_factory=QC)  # type: ignore[arg-type]
    ray: RaySettings = Field(default_factory=RaySettings)  # type: ignore[arg-type]
    voices: dict[str, Voice] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="hot folder inbox/<name>/ -> the rest of a manifest"
    )
    pronunciations: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="language -> word -> how to say it"
    )
    models: dict[str, ConvertModel] = Field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _base: Path = PrivateAttr(default_factory=Path)

    def source_of(self, key: str) -> str:
        """Where a dotted key's value came from: an environment variable, the config
        file, or the built-in defaults."""
        return self._sources.get(key, "defaults")

    def resolve(self, path: Path) -> Path:
        """A configured path made absolute: relative ones are relative to the config file."""
        return path if path.is_absolute() else self._base / path

    def invalid(self, key: str, value: object, why: str) -> ConfigError:
        """The one shape of every configuration error: key, value, source, what is allowed."""
        return ConfigError(
            f"invalid configuration:\n  {key} = {value!r} (from {self.source_of(key)}) "
            f"is invalid: {why}",
            field=key,
        )

    def overlaid(self, path: Path, keys: frozenset[str]) -> Settings:
        """These settings with the top-level `keys` a TOML file sets replaced (merged
        table by table); its relative paths are relative to it. A key not in `keys`, or a
        bad value, is a ConfigError naming the file."""
        data = read_toml(path)
        extra = sorted(set(data) - keys)
        if extra:
            raise ConfigError(
                f"{path}: {extra[0]} cannot be set here (only {', '.join(sorted(keys))})",
                field=extra[0],
            )
        merged = merge(self.model_dump(mode="python"), data)
        try:
            overlaid = Settings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(describe(exc, dict.fromkeys(flatten(data), str(path)), merged),
                              field="config") from None  # fmt: skip
        overlaid._sources = {**self._sources, **dict.fromkeys(flatten(data), str(path))}
        overlaid._base = path.parent.absolute()
        return overlaid

    @property
    def state_path(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.spool / "state"

    @property
    def policy(self) -> str:
        """The residency policy in force: LOW_VRAM picks low/normal unless one is named."""
        if self.residency.policy != "auto":
            return self.residency.policy
        return "low" if self.low_vram else "normal"


def load_settings(
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the layers; `env` defaults to os.environ (read here, at call time)."""
    env = os.environ if env is None else env
    if config_path is None and env.get(ENV_PREFIX + "CONFIG"):
        config_path = Path(env[ENV_PREFIX + "CONFIG"])
    data: dict[str, Any] = read_toml(config_path) if config_path else {}
    env_data, env_origin = env_overrides(env)
    origin = dict.fromkeys(flatten(data), str(config_path)) | env_origin
    data = merge(merge(data, env_data), dict(overrides or {}))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origin, data), field="config") from None
    settings._sources = origin
    settings._base = config_path.parent.absolute() if config_path else Path.cwd()
    return settings
