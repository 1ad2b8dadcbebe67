"""The original benchmark_vram, for the real engines: per engine and mode, VRAM and seconds.

    python benchmarks/engines.py [--size tiny|real] [--device cpu|cuda] [--json FILE]

Builds random-initialised models in each engine's real checkpoint layout (`tiny`, or
`real`: the libraries' default, published-size architectures, for a GPU machine), then
per engine (xtts; f5tts; espeak -> rvc) and mode (LOW_VRAM=true / false) runs a cold and
a warm job through the daemon's JobRunner and prints the seven VRAM stats before and after,
the peak of device memory, load and inference seconds. Last, per engine, the overhead of
the daemon: one warm voicedrop job / the library's own call on the same model and text
(for rvc: the convert stage / the library's BaseLoader.infer on the same audio).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakTracker, machine
from voicedrop import logs
from voicedrop.config import GB, Settings, load_settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.device_choice import make_device
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.selftest import JOBS as SELFTEST_JOBS
from voicedrop.tiny.build import build_tiny

TEXT = "The drop folder daemon turns a manifest into speech, one job at a time."
# the selftest's jobs, with RVC's pitch from RMVPE (a model of its own) instead of pm
JOBS: dict[str, dict[str, Any]] = {
    **SELFTEST_JOBS,
    "rvc": {
        **SELFTEST_JOBS["rvc"],
        "convert": {**SELFTEST_JOBS["rvc"]["convert"], "method": "rmvpe"},
    },
}


def run_mode(root: Path, out: Path, engine: str, device: str, low: bool) -> dict[str, Any]:
    settings = load_settings(
        root / "config.toml",
        env={},
        overrides={
            "device": device,
            "low_vram": low,
            "spool": out / "spool",
            "cache": {"clips_gb": 0},  # time the engine, not a kept clip of the last run
        },
    )
    tracker = PeakTracker(make_device(device))
    manager = ResidencyManager.from_settings(settings, tracker)  # type: ignore[arg-type]
    runner = JobRunner(settings, build_engines(settings), manager)
    try:
        before = manager.get_vram_usage().model_dump()
        cold = job(runner, engine, out / f"{engine}-{low}-cold")
        warm = job(runner, engine, out / f"{engine}-{low}-warm")
        row = {
            "engine": engine,
            "mode": "LOW" if low else "NORMAL",
            "before": before,
            "after": manager.get_vram_usage().model_dump(),
            "peak_gb": round(tracker.global_peak() / GB, 3),
            "cold": cold,
            "warm": warm,
        }
        if not low:
            row["library_s"] = library_time(runner, settings, engine)
            stage = "convert" if engine == "rvc" else None
            row["job_s"] = warm["stage_s"][stage] if stage else warm["total_s"]
        return row
    finally:
        manager.close()


def job(runner: JobRunner, engine: str, out: Path) -> dict[str, Any]:
    manifest = Manifest.model_validate({"text": TEXT, **JOBS[engine]})
    started = time.perf_counter()
    outcome = runner.run(JobInput(out.name, manifest, None, out), lambda _m: None)
    total = time.perf_counter() - started
    if outcome.error:
        raise SystemExit(f"{engine}: {outcome.error.code}: {outcome.error.message}")
    return summarise(outcome, total)


def summarise(outcome: Outcome, total: float) -> dict[str, Any]:
    moves = {"load": 0.0, "promote": 0.0}
    for e in outcome.events:
        if e.event in moves:
            moves[e.event] += e.seconds
    stages = {s.name: s.seconds for s in outcome.stages}
    compute = sum(v for k, v in stages.items() if k != "post") - moves["load"] - moves["promote"]
    return {
        "total_s": round(total, 4),
        "load_s": round(moves["load"], 4),
        "promote_s": round(moves["promote"], 4),
        "infer_s": round(compute, 4),
        "stage_s": stages,
        "audio_s": outcome.outputs[0].duration_s,
    }


def library_time(runner: JobRunner, settings: Settings, engine: str) -> float:
    """The same model and text through the library's own inference call (warm, resident)."""
    from benchmarks.library_calls import CALLS

    manifest = Manifest.model_validate({"text": TEXT, **JOBS[engine]})
    return CALLS[engine](runner, settings, manifest, TEXT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--engines", default="xtts,f5tts,rvc")
    parser.add_argument("--json", type=Path, help="write the figures here ('-': stdout)")
    args = parser.parse_args()
    logs.configure("json", "error")
    names = args.engines.split(",")
    with tempfile.TemporaryDirectory(prefix="voicedrop-bench-") as tmp:
        root = Path(tmp) / "models"
        started = time.perf_counter()
        build_tiny(root, names, rmvpe=True, full=args.size == "real")
        built_s = time.perf_counter() - started
        rows, failed = [], []
        for name in names:  # one engine's failure is a finding; the others still run
            for low in (True, False):
                try:
                    rows.append(run_mode(root, Path(tmp) / "out", name, args.device, low))
                except (Exception, SystemExit) as exc:
                    failed.append({"engine": name, "low": low, "error": str(exc)[:500]})
    report(rows, args, built_s)
    for f in failed:
        print(f"FAILED {f['engine']} {'LOW' if f['low'] else 'NORMAL'}: {f['error']}")
    data = {"machine": machine(args.device), "rows": rows, "failed": failed}
    if args.json is not None and str(args.json) == "-":
        print(json.dumps(data))
    elif args.json is not None:
        args.json.write_text(json.dumps(data, indent=1))
    if failed:
        raise SystemExit(1)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, built_s: float) -> None:
    print(
        f"engines benchmark, {args.size} models on {machine(args.device)} "
        f"(built in {built_s:.1f} s)"
    )
    print(
        f"{'engine':7} {'mode':6} {'alloc GB before/after':>21} {'peak GB':>8} "
        f"{'cold load s':>11} {'cold infer s':>12} {'warm s':>7} {'warm promote s':>14}"
    )
    for r in rows:
        ba = f"{r['before']['allocated_gb']:.3f}/{r['after']['allocated_gb']:.3f}"
        print(
            f"{r['engine']:7} {r['mode']:6} {ba:>21} {r['peak_gb']:8.3f} "
            f"{r['cold']['load_s']:11.3f} {r['cold']['infer_s']:12.3f} "
            f"{r['warm']['total_s']:7.3f} {r['warm']['promote_s']:14.4f}"
        )
    print("seed stats after, LOW:", {r["engine"]: r["after"] for r in rows if r["mode"] == "LOW"})
    print("daemon overhead: one warm voicedrop job / the library's own call, same model and text")
    for r in rows:
        if "library_s" in r:
            ratio = r["job_s"] / r["library_s"]
            print(f"  {r['engine']:7} {r['job_s']:.3f} s / {r['library_s']:.3f} s = {ratio:.2f}")


if __name__ == "__main__":
    main()
