"""Build the tiny models of the installed engines and a config that names them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voicedrop.tiny.reference import build_reference

# What each engine's tiny set is called in the config the builder writes.
XTTS_VOICE, F5_VOICE, RVC_MODEL = "tiny-xtts", "tiny-f5", "tiny-rvc"


def build_tiny(
    root: Path,
    engines: list[str],
    *,
    rmvpe: bool = False,
    asr: bool = False,
    full: bool = False,
) -> dict[str, Any]:
    """Build into `root`; return the configuration (as a dict) that names what was built.

    Paths in it are relative to `root`, which is also its only model root, so the
    config can be written to `root/config.toml` and used from anywhere. `full` builds the
    libraries' default (published-size) architectures instead, for GPU benchmarks."""
    root.mkdir(parents=True, exist_ok=True)
    reference, text = build_reference(root / "voices" / "reference.wav")
    config: dict[str, Any] = {"model_roots": ["."], "engines": {}, "voices": {}, "models": {}}
    rel = "voices/reference.wav"
    if "xtts" in engines:
        from voicedrop.tiny.xtts import build_xtts

        build_xtts(root / "xtts", reference, full=full)
        config["engines"]["xtts"] = {"model_dir": "xtts", "seed": 1}
        config["voices"][XTTS_VOICE] = {"engine": "xtts", "reference": rel}
    if "f5tts" in engines:
        from voicedrop.tiny.f5tts import ARCH, build_f5tts

        build_f5tts(root / "f5tts", full=full)
        config["engines"]["f5tts"] = {
            "checkpoint": "f5tts/model.safetensors",
            "vocab": "f5tts/vocab.txt",
            "vocoder_dir": "f5tts/vocos",
            "arch": "F5TTS_v1_Base" if full else ARCH,
            "nfe_step": 32 if full else 8,
            "seed": 1,
        }
        if asr:
            from voicedrop.tiny.whisper import build_whisper

            build_whisper(root / "whisper")
            config["engines"]["f5tts"]["asr_dir"] = "whisper"
        config["voices"][F5_VOICE] = {"engine": "f5tts", "reference": rel, "reference_text": text}
    if "rvc" in engines:
        from voicedrop.tiny import rvc

        rvc.build_voice(root / "rvc" / "voice.pth", full=full)
        rvc.build_hubert(root / "rvc" / "hubert", full=full)
        rvc.build_index(root / "rvc" / "voice.index")
        config["engines"]["rvc"] = {"hubert_dir": "rvc/hubert"}
        if rmvpe:
            rvc.build_rmvpe(root / "rvc" / "rmvpe.pt")
            config["engines"]["rvc"]["rmvpe"] = "rvc/rmvpe.pt"
        config["models"][RVC_MODEL] = {
            "engine": "rvc",
            "path": "rvc/voice.pth",
            "index": "rvc/voice.index",
        }
    (root / "config.toml").write_text(to_toml(config))
    return config


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for the configs we write: scalars, lists, inline tables, sections."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, entries in data.items():
        if not isinstance(entries, dict):
            continue
        for name, table in entries.items():
            lines += ["", f"[{section}.{json.dumps(name)}]"]
            lines += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")
