"""`voicedrop selftest`: every installed engine, on tiny real-layout models, through the runner.

For a user who has just installed the engines (say the CUDA build on a GPU
workstation) and wants to know that each one works before downloading
gigabytes of weights: build tiny random-initialised models in each engine's
real checkpoint layout, run one job per engine through the daemon's own
JobRunner on the configured device under LOW_VRAM=true and false, and report
per engine what happened.
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

from voicedrop.config import Settings, load_settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.device_choice import make_device
from voicedrop.pipeline.engines import build_engines, default_registries
from voicedrop.pipeline.engines.base import install_hint, installed
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.tiny.build import F5_VOICE, RVC_MODEL, XTTS_VOICE, build_tiny

ENGINES = ("xtts", "f5tts", "rvc")
SAY = "Hello from the self test. This tiny model speaks noise, not words."
JOBS: dict[str, dict[str, Any]] = {
    "xtts": {"tts": {"engine": "xtts", "voice": XTTS_VOICE, "language": "en"}},
    "f5tts": {"tts": {"engine": "f5tts", "voice": F5_VOICE}},
    "rvc": {
        "tts": {"engine": "espeak", "language": "en"},
        "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "pm"},
    },
}


def run_selftest(
    settings: Settings, names: list[str] | None = None, keep: Path | None = None
) -> dict[str, Any]:
    """Build, run, report; `keep` leaves the models and a config naming them there."""
    wanted = names or list(ENGINES)
    tts, convert = default_registries()
    classes = {n: (tts.get(n) if n in tts else convert.get(n)) for n in wanted}
    root = keep or Path(tempfile.mkdtemp(prefix="voicedrop-selftest-"))
    results: dict[str, dict[str, Any]] = {}
    ready = []
    for name, cls in classes.items():
        if installed(cls):
            ready.append(name)
        else:
            results[name] = {"engine": name, "status": "not installed", "extra": cls.extra}
    try:
        if ready:
            build_tiny(root, ready)
        for name in ready:
            modes = {}
            for mode, low in (("low", True), ("normal", False)):
                overrides = {
                    "device": settings.device,
                    "low_vram": low,
                    "spool": root / "spool",
                    "cache": {"clips_gb": 0},  # each run must reach the engine, not a kept clip
                }
                tiny = load_settings(root / "config.toml", env={}, overrides=overrides)
                manager = ResidencyManager.from_settings(tiny, make_device(tiny.device))
                runner = JobRunner(tiny, build_engines(tiny), manager)
                try:
                    modes[mode] = _job(runner, name, root / "out" / f"{name}-{mode}")
                finally:
                    manager.close()
            ok = all(m["ok"] for m in modes.values())
            results[name] = {"engine": name, "status": "ok" if ok else "failed", "ok": ok, **modes}
    except Exception as exc:  # a builder failed: every engine not yet reported failed with it
        for name in ready:
            results.setdefault(name, _failed(name, exc))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "device": settings.device,
        "engines": {n: results[n] for n in wanted},
        "kept": str(keep) if keep else None,
    }


def _failed(name: str, exc: BaseException) -> dict[str, Any]:
    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return {"engine": name, "status": "failed", "ok": False, "error": detail}


def _job(runner: JobRunner, name: str, out_dir: Path) -> dict[str, Any]:
    manifest = Manifest.model_validate({"text": SAY, **JOBS[name]})
    outcome = runner.run(JobInput(f"selftest-{name}", manifest, None, out_dir), lambda _m: None)
    return summary(outcome)


def summary(outcome: Outcome) -> dict[str, Any]:
    error = outcome.error
    output = outcome.outputs[0] if outcome.outputs else None
    return {
        "ok": error is None and output is not None,
        "error": f"{error.code}: {error.message}" if error else None,
        "sample_rate": output.sample_rate if output else None,
        "audio_s": output.duration_s if output else None,
        "load_s": round(sum(e.seconds for e in outcome.events if e.event == "load"), 4),
        "synth_s": round(sum(s.seconds for s in outcome.stages if s.name != "post"), 4),
        "events": [f"{e.event} {e.key} {e.src}->{e.dst}" for e in outcome.events],
        "vram_after": outcome.vram_after and outcome.vram_after.model_dump(),
    }


def render(result: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = [f"device: {result['device']}"]
    for name, r in result["engines"].items():
        if r["status"] == "not installed":
            lines.append(f"{name:7} not installed ({install_hint(r['extra'])})")
            continue
        if "low" not in r:
            lines.append(f"{name:7} FAILED: {r.get('error')}")
            continue
        lines.append(f"{name:7} {'ok' if r['ok'] else 'FAILED'}")
        for mode in ("low", "normal"):
            m = r[mode]
            if m["error"]:
                lines.append(f"  {mode:6} failed: {m['error']}")
                continue
            lines.append(
                f"  {mode:6} {m['sample_rate']} Hz, {m['audio_s']} s of audio, "
                f"load {m['load_s']} s, synthesis {m['synth_s']} s"
            )
            lines.append(f"         {'; '.join(m['events'])}")
    if result["kept"]:
        lines.append(
            f"kept: {result['kept']} (voicedrop --config {result['kept']}/config.toml run)"
        )
    return "\n".join(lines)


def passed(result: dict[str, Any]) -> bool:
    return all(r["status"] in ("ok", "not installed") for r in result["engines"].values())
