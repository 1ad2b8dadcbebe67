"""Throughput: one queue of 20 mixed jobs under naive LOW, voicedrop LOW and NORMAL.

    python benchmarks/throughput.py [--jobs 20] [--pcie-gbps 25] [--load-costs FILE] [--json]

The queue: XTTS and F5-TTS jobs over several voices, half of them converted by one of
two RVC voices, some of them subtitle scripts of 10 cues; the same queue, in the same
order, for each set-up:

  naive-low      the original LOW_VRAM: every stage loads its models from disk
                 and unloads them after (no warm tier, no prefetch, no affinity)
  voicedrop-low  LOW_VRAM as voicedrop runs it: after each stage its models leave the
                 GPU for the warm tier; the next stage's (or next job's) models are
                 prefetched from disk meanwhile; affinity orders the queue
  normal         LOW_VRAM=false on a card that holds every model

Each runs the real daemon (executor, scheduler, residency manager, prefetch thread) on a
real spool, with the real engines on tiny models. There is no GPU here, so the device is
a model of one, charged at the published sizes of the real checkpoints:

- a model's bytes on the device are its real checkpoint's (XTTS 1.87 GB, F5 1.34 GB, ...);
- a host↔device copy costs bytes ÷ `--pcie-gbps` (PCIe Gen4 x16 measures ≈ 25 GB/s);
- a disk load costs what voicedrop's loader takes for the real-size checkpoint on this
  machine (`benchmarks/cold_load.py --real-size --json`, measured now unless
  `--load-costs` gives that output), and then the copy to the device;
- compute costs seconds of speech times a real-time factor per engine (RTF: defaults
  from published GPU figures), with working memory of 10 % of the stage's weights.

Copies, loads and compute are waited out in real time, so the prefetch thread overlaps
them as it would on a GPU. Each run of a set-up is a process of its own (on a card, one
set-up's peak, cached blocks and compiled kernels must not count in the next one's). The
set-ups run `--repeat` times (default 2), interleaved, and each keeps its best run: a
busy spell of a shared machine must not decide the ratio.
Printed: jobs per minute and peak device memory per set-up,
the largest single stage, and the ratios LOW ÷ NORMAL and voicedrop-LOW ÷ naive-LOW;
`--json` prints the same as one JSON object on the last line (`low_over_normal`).
Goal: LOW ÷ NORMAL ≥ 0.95, LOW's peak within 5 % of the largest stage.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voicedrop.config import GB, Settings, load_settings  # noqa: E402
from voicedrop.pipeline.device import MemoryInfo, _AccountingDevice  # noqa: E402
from voicedrop.pipeline.engines import Engines, build_engines  # noqa: E402
from voicedrop.pipeline.engines.base import synthesize  # noqa: E402
from voicedrop.pipeline.modelspec import ModelSpec, Placement  # noqa: E402

# bytes of the published checkpoints (ENGINES.md), used when no cold-load run gives them
SIZES = {
    "xtts": 1_870_000_000,
    "f5tts": 1_344_000_000,
    "vocos": 54_000_000,
    "hubert": 380_000_000,
    "rmvpe": 181_000_000,
    "rvc": 53_000_000,
}
RTF = {"xtts": 0.25, "f5tts": 0.15, "rvc": 0.05}  # seconds of compute per second of speech
CHARS_PER_S = 15.0  # speech rate of the texts, to turn text into seconds of speech
WORKING_SHARE = 0.10  # working memory of a stage, as a share of its weights
SETUPS: dict[str, dict[str, Any]] = {
    "naive-low": {"policy": "low", "warm": False, "prefetch": False, "affinity": False},
    "voicedrop-low": {"policy": "low", "warm": True, "prefetch": True, "affinity": True},
    "normal": {"policy": "normal", "warm": True, "prefetch": True, "affinity": True},
}
SMALL_CARD, BIG_CARD = 6 * GB, 24 * GB
SENTENCES = [
    "The quarterly report is ready for review.",
    "Please keep your seat belt fastened while the sign is on.",
    "Tomorrow's forecast calls for light rain in the afternoon.",
    "Our next stop is the central station.",
    "Thank you for calling; your request has been received.",
    "The museum opens at nine and closes at six.",
]


def family(key: str) -> str:
    """`rvc:alice` → `rvc`: what a model key is charged as."""
    return key.split(":", 1)[0]


# ---- the modeled GPU ---------------------------------------------------------------------


class ModeledGPU(_AccountingDevice):
    """A GPU seen through its costs: real-size bytes against a capacity, copies at a
    bandwidth. Models compute on the CPU (`name = "cpu"`); only bytes and times are modeled."""

    name = "cpu"

    def __init__(self, capacity: int, pcie_bps: float) -> None:
        super().__init__()
        self.capacity = capacity
        self.pcie_bps = pcie_bps
        self.scratch = 0
        self.sizes: dict[int, int] = {}  # id(model) -> real-size bytes
        self.kept: set[int] = set()  # models whose host copy was kept: going back is free
        self.copied = 0.0  # seconds spent copying, for the report

    def _copy(self, nbytes: int) -> None:
        seconds = nbytes / self.pcie_bps
        self.copied += seconds
        time.sleep(seconds)

    def memory(self) -> MemoryInfo:
        used = self.allocated + self.scratch
        return MemoryInfo(True, used, used, self.capacity - used, self.capacity)

    def model_bytes(self, model: Any) -> int:
        return self.sizes.get(id(model), 0)

    def to_device(self, model: Any, *, keep_host: bool = False) -> Any:
        if keep_host:
            self.kept.add(id(model))
        if id(model) not in self._placed:
            nbytes = self.model_bytes(model)
            if self.allocated + self.scratch + nbytes > self.capacity:
                raise MemoryError(f"modeled GPU: out of memory placing {nbytes} bytes")
            self._copy(nbytes)
            self._account(model, nbytes)
        return model

    def to_host(self, model: Any, *, pin: bool) -> Any:
        if id(model) in self._placed:
            if id(model) not in self.kept:
                self._copy(self._placed[id(model)])
            self.forget(model)
        return model

    def forget(self, model: Any) -> None:
        self.kept.discard(id(model))
        super().forget(model)

    def work(self, nbytes: int, seconds: float) -> None:
        """A stage's compute: its working memory held for `seconds`."""
        self.scratch += nbytes
        self._peak = max(self._peak, self.allocated + self.scratch)
        time.sleep(max(0.0, seconds))
        self.scratch -= nbytes

    def reset_peak(self) -> None:
        self._peak = self.allocated + self.scratch

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)


# ---- engines charged at real size ----------------------------------------------------------


@dataclass
class Charges:
    device: ModeledGPU
    sizes: Mapping[str, int]  # family -> bytes
    load_s: Mapping[str, float]  # family -> seconds of voicedrop's real-size load
    rtf: Mapping[str, float]
    global_peak: int = 0

    def spec(self, spec: ModelSpec) -> ModelSpec:
        """The same model, its size and load time charged as the real checkpoint's."""
        size, cost, inner = self.sizes[family(spec.key)], self.load_s[family(spec.key)], spec.load

        def load(placement: Placement) -> Any:
            started = time.perf_counter()
            model = inner(placement)
            time.sleep(max(0.0, cost - (time.perf_counter() - started)))
            self.device.sizes[id(model)] = size
            return model

        return replace(spec, load=load, expected_bytes=int(size * (1 + WORKING_SHARE)))

    def compute(
        self, engine: str, models: Mapping[str, Any], speech_s: float, spent: float
    ) -> None:
        weights = sum(self.device.model_bytes(m) for m in models.values())
        self.device.work(int(weights * WORKING_SHARE), speech_s * self.rtf[engine] - spent)


class ChargedTTS:
    def __init__(self, inner: Any, charges: Charges) -> None:
        self.inner, self.charges = inner, charges

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def models(self, request: Any) -> dict[str, ModelSpec]:
        return {role: self.charges.spec(s) for role, s in self.inner.models(request).items()}

    def stream(self, models: Any, text: str, request: Any, progress: Any) -> Any:
        started = time.perf_counter()
        audio = synthesize(self.inner, models, text, request, progress)
        spent = time.perf_counter() - started
        self.charges.compute(self.inner.name, models, len(text) / CHARS_PER_S, spent)
        yield audio


class ChargedConvert(ChargedTTS):  # its models are charged as ChargedTTS charges them
    def convert(self, models: Any, audio: Any, request: Any) -> Any:
        started = time.perf_counter()
        out = self.inner.convert(models, audio, request)
        spent = time.perf_counter() - started
        self.charges.compute("rvc", models, audio.duration_s, spent)
        return out


def charged(engines: Engines, charges: Charges) -> Engines:
    for name in list(engines.tts):
        engines.tts[name] = ChargedTTS(engines.tts[name], charges)  # type: ignore[assignment]
    for name in list(engines.convert):
        engines.convert[name] = ChargedConvert(engines.convert[name], charges)  # type: ignore[assignment]
    return engines


# ---- the queue ---------------------------------------------------------------------------


def queue(
    n: int, *, rvc: bool = True, seed: int = 10
) -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, manifest, SRT text or None): two engines over several voices, half with RVC,
    one job in five a script of 10 cues."""
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        voice = rng.choice(["xtts-a", "xtts-b", "xtts-c", "f5-a", "f5-b"])
        engine = "xtts" if voice.startswith("xtts") else "f5tts"
        manifest: dict[str, Any] = {"tts": {"engine": engine, "voice": voice, "language": "en"}}
        voice_model = rng.choice(["rvc-alice", "rvc-bob"])
        if i % 2 and rvc:
            manifest["convert"] = {"engine": "rvc", "model": voice_model, "method": "rmvpe"}
        script = None
        if i % 5 == 4:
            script = srt([rng.choice(SENTENCES) for _ in range(10)])
            manifest["script"] = f"job{i:02d}.srt"
        else:
            manifest["text"] = " ".join(rng.sample(SENTENCES, rng.randint(1, 3)))
        jobs.append((f"job{i:02d}", manifest, script))
    return jobs


def srt(lines: list[str]) -> str:
    def stamp(s: float) -> str:
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}".replace(".", ",")

    cues, at = [], 0.5
    for i, line in enumerate(lines, 1):
        length = len(line) / CHARS_PER_S + 0.3
        cues.append(f"{i}\n{stamp(at)} --> {stamp(at + length)}\n{line}\n")
        at += length + 0.4
    return "\n".join(cues)


def settings_for(models: Path, spool: Path, setup: dict[str, Any], device: str) -> Settings:
    base = load_settings(models / "config.toml", env={})
    rel = "voices/reference.wav"
    f5 = base.voices["tiny-f5"]
    voices = {
        **{v: {"engine": "xtts", "reference": rel} for v in ("xtts-a", "xtts-b", "xtts-c")},
        **{
            v: {"engine": "f5tts", "reference": rel, "reference_text": f5.reference_text}
            for v in ("f5-a", "f5-b")
        },
    }
    rvc = {"engine": "rvc", "path": "rvc/voice.pth", "index": "rvc/voice.index"}
    return load_settings(
        models / "config.toml",
        env={},
        overrides={
            "spool": spool,
            "device": device,
            "low_vram": setup["policy"] == "low",
            "watcher": {"stable_delay_s": 0.0},
            "cache": {"clips_gb": 0},  # every job reaches its engine: no clip is reused
            "voices": voices,
            "models": {"rvc-alice": rvc, "rvc-bob": rvc} if (models / "rvc").exists() else {},
            "residency": {
                "policy": setup["policy"],
                "warm_tier": setup["warm"],
                "prefetch": setup["prefetch"],
                "headroom_gb": 0.25,
                "worker": "inline",  # the tracked device is this process's (it models the card)
            },
            "scheduler": {"affinity": setup["affinity"]},
        },
    )


# ---- one set-up ----------------------------------------------------------------------------


def run_setup(
    name: str, models: Path, jobs: list[Any], args: argparse.Namespace, costs: dict[str, Any]
) -> dict[str, Any]:
    from benchmarks.common import PeakTracker
    from voicedrop.daemon.service import Service

    setup = SETUPS[name]
    cuda = args.device == "cuda"
    capacity = BIG_CARD if setup["policy"] == "normal" else SMALL_CARD
    modeled = ModeledGPU(capacity, args.pcie_gbps * 1e9)
    with tempfile.TemporaryDirectory(prefix=f"voicedrop-tp-{name}-") as tmp:
        spool = Path(tmp) / "spool"
        settings = settings_for(models, spool, setup, args.device)
        engines = build_engines(settings)
        if cuda:  # the real card, real-size models, real compute: nothing is modeled
            from voicedrop.pipeline.cuda import CudaDevice

            tracker = PeakTracker(CudaDevice())
        else:
            tracker = PeakTracker(modeled)
            engines = charged(engines, Charges(modeled, costs["sizes"], costs["load_s"], RTF))
        service = Service(settings, device=tracker, engines=engines)
        try:
            service.executor.start()
            for job_name, manifest, script in jobs:
                if script is not None:
                    (spool / "inbox" / manifest["script"]).write_text(script)
                (spool / "inbox" / f"{job_name}.json").write_text(json.dumps(manifest))
            started = time.perf_counter()
            reports = []
            while (report := service.executor.step()) is not None:
                reports.append(report)
            elapsed = time.perf_counter() - started
        finally:
            service.manager.close()
    failed = [r.job_id for r in reports if r.status != "done"]
    if failed:
        first = next(r for r in reports if r.status != "done")
        raise RuntimeError(f"{name}: jobs failed: {failed}; {first.job_id}: {first.error}")
    events = [e for r in reports for e in r.events]
    count = {k: sum(1 for e in events if e.event == k) for k in ("load", "prefetch", "promote")}
    return {
        "jobs": len(reports),
        "seconds": round(elapsed, 2),
        "jobs_per_min": round(len(reports) / elapsed * 60, 2),
        "peak_gb": round(tracker.global_peak() / GB, 3),
        "copy_s": None if cuda else round(modeled.copied, 2),
        "card_gb": round(tracker.memory().total / GB, 1),
        **count,
        "order": [r.job_id for r in reports],
    }


def largest_stage(sizes: Mapping[str, int]) -> int:
    """The biggest single stage's weights plus working memory, at real size."""
    stages = [("xtts",), ("f5tts", "vocos"), ("hubert", "rmvpe", "rvc")]
    present = [sum(sizes[f] for f in stage) for stage in stages if all(f in sizes for f in stage)]
    return int(max(present) * (1 + WORKING_SHARE))


def in_child(name: str, models: Path, argv: list[str], costs: dict[str, Any]) -> dict[str, Any]:
    """One set-up in a fresh process: nothing of another set-up's (its peak, its cached
    blocks, its compiled kernels, its page cache aside) is carried into this one's figures."""
    import subprocess

    costs_file = models / "costs.json"
    costs_file.write_text(json.dumps(costs))
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--child", name, str(models), str(costs_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---- load costs ---------------------------------------------------------------------------


def load_costs(path: Path | None, models: Path | None) -> dict[str, Any]:
    """Per model family, voicedrop's real-size load seconds (page cache warm) and bytes:
    from a `cold_load.py --real-size --json` output if given, else measured now on
    real-size checkpoints (built into `models`, or a temporary directory)."""
    if path is not None:
        raw = json.loads(path.read_text().strip().splitlines()[-1])
        have = [f for f in SIZES if f in raw]  # a TTS-only run has no RVC models
        return {
            "sizes": {f: int(raw[f]["bytes"]) for f in have},
            "load_s": {f: float(raw[f]["seconds"]["voicedrop"]) for f in have},
            "source": str(path),
        }
    from benchmarks import cold_load

    root = cold_load.build(True, models)
    try:
        for fam in SIZES:
            cold_load.read_bytes(cold_load.files_of(root, fam))  # into the page cache
        print("measuring real-size loads …", file=sys.stderr)
        runs = [cold_load.in_child(root, "voicedrop", "cpu", cold=False) for _ in range(2)]
        # page cache warm: a daemon reloads models it read before (its warm tier aside)
        return {
            "sizes": {f: sum(p.stat().st_size for p in cold_load.files_of(root, f)) for f in SIZES},
            "load_s": {f: min(r[f]["seconds"] for r in runs) for f in SIZES},
            "source": "measured now",
        }
    finally:
        if models is None:
            shutil.rmtree(root, ignore_errors=True)


# ---- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pcie-gbps", type=float, default=25.0, help="host↔device GB/s")
    parser.add_argument("--load-costs", type=Path, help="a cold_load.py --real-size --json output")
    parser.add_argument("--real-models", type=Path, help="build into / reuse, for the measure")
    parser.add_argument("--models", type=Path, help="the queue's models: build into / reuse")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="runs per set-up; best kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-rvc", action="store_true", help="TTS only (a GPU run's wheels)")
    parser.add_argument("--json", action="store_true", help="also one JSON object, last line")
    parser.add_argument("--child", nargs=3, metavar=("SETUP", "MODELS", "COSTS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.child:  # one set-up, in a process of its own
        name, models, costs_file = args.child
        from voicedrop import logs

        logs.configure("json", "error")
        costs = json.loads(Path(costs_file).read_text())
        jobs = queue(args.jobs, rvc=not args.no_rvc)
        print(json.dumps(run_setup(name, Path(models), jobs, args, costs)))
        return 0
    argv = sys.argv[1:] if argv is None else argv

    from benchmarks.common import machine
    from voicedrop import logs

    logs.configure("json", "error")
    cuda = args.device == "cuda"
    engines = ["xtts", "f5tts"] + ([] if args.no_rvc else ["rvc"])
    costs = {} if cuda else load_costs(args.load_costs, args.real_models)
    root = args.models or Path(tempfile.mkdtemp(prefix="voicedrop-tp-models-"))
    try:
        from benchmarks.cold_load import build

        build(cuda, root, tuple(engines))  # (or reuse those built there)
        results: dict[str, dict[str, Any]] = {}
        for turn in range(args.repeat):  # interleaved: a slow spell of a shared machine
            for name in args.setups.split(","):  # hits every set-up, and the best is kept
                print(f"running {name} ({turn + 1}/{args.repeat}) …", file=sys.stderr)
                run = in_child(name, root, argv, costs)
                best = results.get(name)
                runs = [*(best or {}).get("runs", []), run["jobs_per_min"]]
                if best is None or run["jobs_per_min"] > best["jobs_per_min"]:
                    best = run
                results[name] = {**best, "runs": runs}
    finally:
        if args.models is None:
            shutil.rmtree(root, ignore_errors=True)
    if cuda:  # naive LOW holds exactly one stage at a time: its peak is the largest stage
        stage = int(results.get("naive-low", {}).get("peak_gb", 0) * GB)
    else:
        stage = largest_stage(costs["sizes"])
    summary: dict[str, Any] = {
        "setups": results,
        "largest_stage_gb": round(stage / GB, 3),
        "device": "real GPU" if cuda else "modeled GPU",
        "measured": cuda,  # False: the ratios come from sleeps set by constants (a model)
        "pcie_gbps": None if cuda else args.pcie_gbps,
        "rtf": None if cuda else RTF,
        "load_s": {f: round(v, 4) for f, v in costs.get("load_s", {}).items()},
        "load_costs": costs.get("source"),
        "machine": machine(args.device),
    }
    if {"voicedrop-low", "normal"} <= results.keys():
        low, normal = results["voicedrop-low"], results["normal"]
        summary["low_over_normal"] = round(low["jobs_per_min"] / normal["jobs_per_min"], 3)
        if stage:
            summary["low_peak_over_stage"] = round(low["peak_gb"] * GB / stage, 3)
    if {"voicedrop-low", "naive-low"} <= results.keys():
        naive = results["naive-low"]["jobs_per_min"]
        summary["low_over_naive"] = round(results["voicedrop-low"]["jobs_per_min"] / naive, 3)
    print(report(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def report(s: dict[str, Any]) -> str:
    first = next(iter(s["setups"].values()))
    device = (
        f"modeled GPU (PCIe {s['pcie_gbps']:g} GB/s, RTF {s['rtf']}, loads: {s['load_costs']})"
        if s["device"] == "modeled GPU"
        else "real GPU"
    )
    lines = [
        f"throughput, {first['jobs']} jobs, {device}, {s['machine']}, {time.strftime('%Y-%m-%d')}",
        "| set-up | card GB | jobs/min | seconds | peak GB | loads | prefetches | promotes "
        "| copy s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in s["setups"].items():
        copy = "-" if r["copy_s"] is None else f"{r['copy_s']:.2f}"
        lines.append(
            f"| {name} | {r['card_gb']:g} | {r['jobs_per_min']:.2f} | {r['seconds']:.1f} | "
            f"{r['peak_gb']:.2f} | {r['load']} | {r['prefetch']} | {r['promote']} | {copy} |"
        )
    lines.append(f"largest single stage: {s['largest_stage_gb']:.2f} GB")
    modeled = s["device"] == "modeled GPU"
    for key in ("low_over_normal", "low_over_naive", "low_peak_over_stage"):
        if key in s:
            note = " (MODELED: copies and compute are sleeps set by constants)" if modeled else ""
            lines.append(f"{key}: {s[key]}{note}")
    if modeled:
        lines.append(
            "These ratios come from a model of a GPU, not a measurement: host-device copies "
            "wait bytes / --pcie-gbps, compute waits the published real-time factors. The "
            "figure that counts is `--device cuda` on a real card."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
