"""Time to first audio and real-time factor, per engine, through the daemon's job runner.

    python benchmarks/first_audio.py [--real-size] [--device cpu|cuda] [--models DIR]
                                     [--engines xtts,f5tts,rvc] [--repeat 2] [--json]

Builds random-initialised models in the published layouts (voicedrop.tiny; `--real-size`:
the published architectures at full size, for a card) or reuses those in `--models`,
then per engine runs one cold job (its models read from disk) and `--repeat` warm ones
(models resident, LOW_VRAM=false) through the JobRunner, each with a live stream
attached as the speech API attaches one. Per job: seconds from the job's start to the
first PCM byte of its stream (`first_audio_s`), to its end (`total_s`), the seconds of
audio made, and the real-time factor (`rtf` = total ÷ audio: below 1 is faster than
real time). XTTS streams within a sentence (`stream_tokens = 20`, the library's
inference_stream); F5-TTS speaks a sentence at a time; RVC converts espeak's speech
once it is whole, so its first audio is its whole job.

Random weights never say stop: XTTS speaks to its length bound (605 audio tokens at full
size, about 28 s), so the real-time factor is the figure to compare, not the seconds.
`--json` prints one JSON object on the last line, keyed by engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = "The drop folder daemon turns a manifest into speech. It keeps every job it is given."


class FirstByte:
    """A PcmSink that notes when the first audio arrives (and how many bytes come)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.bytes = 0

    def open(self, sample_rate: int) -> int:
        return 0

    def write(self, data: bytes) -> None:
        if self.first is None and data:
            self.first = time.perf_counter()
        self.bytes += len(data)

    def end(self) -> None:
        pass


def job(runner: Any, engine: str, out: Path) -> dict[str, Any]:
    from benchmarks.engines import JOBS
    from voicedrop.manifest import Manifest
    from voicedrop.pipeline.runner import JobInput

    manifest = Manifest.model_validate({"text": TEXT, **JOBS[engine]})
    sink = FirstByte()
    started = time.perf_counter()
    outcome = runner.run(JobInput(out.name, manifest, None, out, stream=sink), lambda _m: None)
    total = time.perf_counter() - started
    if outcome.error:
        raise RuntimeError(f"{engine}: {outcome.error.code}: {outcome.error.message}")
    audio = outcome.outputs[0].duration_s
    first = (sink.first - started) if sink.first is not None else total
    return {
        "first_audio_s": round(first, 4),
        "total_s": round(total, 4),
        "audio_s": round(audio, 3),
        "rtf": round(total / audio, 4) if audio else None,
    }


def measure(root: Path, engine: str, device: str, repeat: int, out: Path) -> dict[str, Any]:
    from voicedrop.config import load_settings
    from voicedrop.pipeline.device_choice import make_device
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.residency import ResidencyManager
    from voicedrop.pipeline.runner import JobRunner

    settings = load_settings(
        root / "config.toml",
        env={},
        overrides={
            "device": device,
            "low_vram": False,
            "spool": out / "spool",
            "cache": {"clips_gb": 0},  # every job made, none served from a kept clip
            "engines": {"xtts": {"stream_tokens": 20}},
        },
    )
    manager = ResidencyManager.from_settings(settings, make_device(device))
    runner = JobRunner(settings, build_engines(settings), manager)
    try:
        cold = job(runner, engine, out / f"{engine}-cold")
        warm = [job(runner, engine, out / f"{engine}-warm{i}") for i in range(repeat)]
    finally:
        manager.close()
    median = {k: statistics.median(w[k] for w in warm) for k in ("first_audio_s", "total_s", "rtf")}
    return {"cold": cold, "warm": warm, **{f"warm_{k}": round(v, 4) for k, v in median.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="published-size models")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", type=Path, help="build into / reuse this directory")
    parser.add_argument("--engines", default="xtts,f5tts,rvc")
    parser.add_argument("--repeat", type=int, default=2, help="warm jobs per engine (median)")
    parser.add_argument("--json", action="store_true", help="also one JSON object, last line")
    args = parser.parse_args(argv)

    from benchmarks.cold_load import build
    from benchmarks.common import machine
    from voicedrop import logs

    logs.configure("json", "error")
    names = tuple(args.engines.split(","))
    root = build(args.real_size, args.models, names)
    results: dict[str, Any] = {"machine": machine(args.device), "real_size": args.real_size}
    with tempfile.TemporaryDirectory(prefix="voicedrop-first-audio-") as tmp:
        for name in names:  # one engine's failure is a finding; the others still run
            try:
                results[name] = measure(root, name, args.device, args.repeat, Path(tmp))
            except Exception as exc:
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(f"time to first audio, {'real-size' if args.real_size else 'tiny'} models, "
          f"{results['machine']}")  # fmt: skip
    for name in names:
        r = results[name]
        if "error" in r:
            print(f"  {name:6} FAILED: {r['error']}")
            continue
        print(f"  {name:6} first audio {r['warm_first_audio_s'] * 1000:7.0f} ms warm, "
              f"{r['cold']['first_audio_s']:6.2f} s cold; RTF {r['warm_rtf']:.3f}")  # fmt: skip
    if args.json:
        print(json.dumps(results))
    return 1 if any("error" in results[n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
