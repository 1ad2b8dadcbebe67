"""The layers settings come from, before they are validated: the config file (TOML, its
relative paths made relative to it), the environment (`VOICEDROP_SECTION__KEY`,
`LOW_VRAM`), and how a validation error is told in their terms: the key, the value,
where it came from, what is allowed.

Kept apart from config.py, which owns what the settings are; this module owns only
reading and merging the plain tables they are validated from.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voicedrop.errors import ConfigError

ENV_PREFIX = "VOICEDROP_"


def _parse_bool(key: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"{key}={raw!r} is invalid: allowed values are 'true' or 'false'", field=key)


def _env_value(raw: str) -> Any:
    """A variable's value: a JSON list or table as such (`["xtts", "vocos"]`), else the
    text, which the settings' types then read."""
    if raw.strip().startswith(("[", "{")):
        try:
            return json.loads(raw)
        except ValueError:
            pass  # left as text: the setting's own error names it
    return raw


def env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Collect overrides from the environment; return them and key → variable name."""
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if "LOW_VRAM" in env:
        data["low_vram"] = _parse_bool("LOW_VRAM", env["LOW_VRAM"])
        origin["low_vram"] = "LOW_VRAM"
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        path = var[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
        origin[".".join(path)] = var
    return data, origin


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", field="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", field="config") from None
    # Relative paths in a config file are relative to that file, not to the CWD
    # (those in [voices], [models] and [engines] too: Settings.resolve).
    for key in ("spool", "state_dir"):
        if isinstance(data.get(key), str):
            data[key] = str(path.parent / data[key])
    metrics = data.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("textfile"), str):
        metrics["textfile"] = str(path.parent / metrics["textfile"])
    if isinstance(data.get("model_roots"), list):
        data["model_roots"] = [str(path.parent / r) for r in data["model_roots"]]
    return data


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping):
            keys.extend(flatten(value, dotted + "."))
    return keys


def describe(exc: ValidationError, origin: Mapping[str, str], data: Mapping[str, Any]) -> str:
    why: dict[str, list[str]] = {}  # one line per key; a union's members joined by "or"
    for err in exc.errors():
        why.setdefault(_key(err["loc"], data), []).append(_allowed(err))
    lines = [
        f"{key} = {_value_at(key, data)!r} (from {origin.get(key, 'defaults')}) is invalid: "
        + "; or ".join(reasons)
        for key, reasons in why.items()
    ]
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _key(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """The dotted key a validation error is about, without pydantic's union-member tags
    (`residency.budget_gb.float` is `residency.budget_gb`)."""
    parts: list[str] = []
    node: Any = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            parts.append(str(part))
            node = node[part]
        elif not parts or isinstance(node, Mapping):
            parts.append(str(part))
            node = None
    return ".".join(parts)


def _value_at(key: str, data: Mapping[str, Any]) -> object:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _allowed(err: Any) -> str:
    """What is allowed, in words: for a union, each member's condition."""
    if err["type"] == "literal_error":
        return str(err["msg"]).replace("Input should be", "allowed:")
    if err["type"] == "extra_forbidden":
        return "unknown key: not a voicedrop setting (see config.toml for them all)"
    return str(err["msg"])
