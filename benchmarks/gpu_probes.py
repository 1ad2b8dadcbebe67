"""Measurements only a GPU can give, each a subcommand that prints one JSON object last.

    python benchmarks/gpu_probes.py promote|dtypes|low [--device cuda] [--models DIR]
                                    [--real-size] [--engines ...]

- `promote`: XTTS's model (~960 tensors in the published layout) promoted from the warm
  tier (pinned host memory) by the residency manager, against a copy of the same
  tensors, one by one, from pinned memory to the device: several rounds, interleaved,
  medians (`promote_over_pinned_copy`: the manager's overhead on the copy itself).
- `dtypes`: each model of the engines, loaded directly onto the device and read ahead
  into the warm tier then promoted: the precision and device of its weights per path
  (they must agree, and be the library's for this card: voicedrop.pipeline.precision).
- `low`: XTTS then RVC in one job under LOW, in one process: the order models came and
  went (`xtts_before_rvc`), the peak of device memory over the largest stage's weights,
  and the bytes left on the device after each job, cuBLAS's workspaces told apart from
  tensors a model left behind (`back_at_baseline` counts the latter).

`promote` and `low` run on the models in `--models` (built there if absent; with
`--real-size` at the published sizes).
On `--device cpu` they run the same code on the CPU (the GPU check's dry run in CI):
the figures then mean nothing, the imports and the code paths are what is checked.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def device_for(name: str) -> Any:
    from voicedrop.pipeline.device_choice import make_device

    return make_device("cuda" if name.startswith("cuda") else "cpu")


def allocated(device: Any) -> int:
    return int(device.memory().allocated)


def promote(device_name: str, root: Path, rounds: int) -> dict[str, Any]:
    """XTTS's model (the published layout: ~960 tensors) promoted from the warm tier by the
    residency manager, round after round, against a copy of the same tensors, one by one,
    from pinned host memory: interleaved, medians kept."""
    import torch

    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.residency import ResidencyManager

    cuda = device_name.startswith("cuda")
    settings = settings_at(root, device_name, low=True)  # LOW: back to the warm tier each use
    device = device_for(device_name)
    manager = ResidencyManager.from_settings(settings, device)
    spec = specs(build_engines(settings), settings, root, ["xtts"])["xtts.model"]
    copies, promotes, host, moved = [], [], [], 0
    try:
        for i in range(rounds + 1):  # round 0 reads the file: a load, not a promote
            started = time.perf_counter()
            with manager.recording() as events, manager.acquire(spec) as model:
                if cuda:
                    torch.cuda.synchronize()
                took = time.perf_counter() - started
                if i == 0:
                    tensors = [*model.parameters(), *model.buffers()]
                    host = [t.detach().to("cpu").pin_memory() if cuda else t.detach().clone()
                            for t in tensors]  # fmt: skip
            if i == 0:
                continue
            if any(e.event == "promote" for e in events):
                promotes.append(took)
                moved += 1
            started = time.perf_counter()
            on = [t.to(device.name, non_blocking=True) for t in host]
            if cuda:
                torch.cuda.synchronize()
            copies.append(time.perf_counter() - started)
            del on
    finally:
        manager.close()
    promote_s = statistics.median(promotes) if promotes else float("nan")
    copy_s = statistics.median(copies)
    return {
        "model": spec.key,
        "tensors": len(host),
        "bytes": sum(t.numel() * t.element_size() for t in host),
        "rounds": rounds,
        "promotes": moved,  # rounds that really promoted (each should)
        "pinned_copy_s": round(copy_s, 5),
        "promote_s": round(promote_s, 5),
        "promote_over_pinned_copy": round(promote_s / copy_s, 3) if copy_s else None,
    }


def settings_at(root: Path, device_name: str, *, low: bool) -> Any:
    from voicedrop.config import load_settings

    return load_settings(
        root / "config.toml",
        env={},
        overrides={
            "device": device_name[:4],
            "low_vram": low,
            "spool": root / "spool",
            "cache": {"clips_gb": 0},
            "residency": {"worker": "inline"},  # measured in this process
        },
    )


def specs(engines: Any, settings: Any, root: Path, names: list[str]) -> dict[str, Any]:
    from voicedrop.manifest import ConvertSpec
    from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, VoiceChoice
    from voicedrop.tiny.build import RVC_MODEL

    ref = root / "voices" / "reference.wav"
    out: dict[str, Any] = {}
    if "xtts" in names:
        voice = VoiceChoice(references=(ref,))
        out |= {f"xtts.{r}": s for r, s in engines.tts["xtts"].models(
            TTSRequest("p", voice, "en")).items()}  # fmt: skip
    if "f5tts" in names:
        voice = VoiceChoice(references=(ref,), reference_text="x")
        out |= {f"f5tts.{r}": s for r, s in engines.tts["f5tts"].models(
            TTSRequest("p", voice, "en")).items()}  # fmt: skip
    if "rvc" in names:
        model = settings.models[RVC_MODEL]
        request = ConvertRequest("p", RVC_MODEL, model, ConvertSpec(
            engine="rvc", model=RVC_MODEL, method="rmvpe"))  # fmt: skip
        out |= {f"rvc.{r}": s for r, s in engines.convert["rvc"].models(request).items()}
    return out


def weights_of(model: Any) -> tuple[str, str]:
    module = getattr(model, "net_g", None) or getattr(model, "model", None) or model
    t = next(module.parameters())
    return str(t.dtype).removeprefix("torch."), str(t.device)


def tiny(names: list[str], where: Path) -> Any:
    from voicedrop.config import load_settings
    from voicedrop.tiny.build import build_tiny

    build_tiny(where, names, rmvpe="rvc" in names)
    return load_settings(where / "config.toml", env={}, overrides={"cache": {"clips_gb": 0}})


def dtypes(device_name: str, names: list[str]) -> dict[str, Any]:
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.residency import ResidencyManager

    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny(names, Path(tmp))
        engines = build_engines(settings)
        found: dict[str, dict[str, Any]] = {}
        for path in ("direct", "prefetched"):
            device = device_for(device_name)
            manager = ResidencyManager.from_settings(settings, device)
            try:
                wanted = specs(engines, settings, Path(tmp), names)
                if path == "prefetched":
                    for spec in wanted.values():
                        manager.warm(spec)
                with manager.acquire_all(wanted) as models:
                    for role, model in models.items():
                        found.setdefault(role, {})[path] = weights_of(model)
            finally:
                manager.close()
    agree = all(len({tuple(v) for v in paths.values()}) == 1 for paths in found.values())
    card = device_for(device_name).placement(warm=False)
    want = {role: "float16" if RULES.get(role) and card.half(RULES[role]) else "float32"
            for role in found}  # fmt: skip
    library = all(p[0] == want[role] for role, paths in found.items() for p in paths.values())
    return {"models": found, "paths_agree": agree, "library_precision": want,
            "follows_library": library, "card": str(card.card)}  # fmt: skip


# each model's library rule (voicedrop.pipeline.precision); the others are float32
RULES: dict[str, Any] = {"f5tts.dit": "f5tts", "rvc.hubert": "rvc", "rvc.rmvpe": "rvc",
                         "rvc.voice": "rvc"}  # fmt: skip


def low(device_name: str, root: Path, jobs: int) -> dict[str, Any]:
    """XTTS then RVC in one job under LOW, in one process: the order models came and went,
    the peak of device memory over the largest stage's weights, and the bytes left on the
    device after each job — with cuBLAS's workspaces, which the caching allocator counts
    as allocated (pytorch #95668), told apart from tensors a model left behind."""
    import torch

    from benchmarks.common import PeakTracker
    from voicedrop.manifest import Manifest
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.residency import ResidencyManager
    from voicedrop.pipeline.runner import JobInput, JobRunner
    from voicedrop.tiny.build import RVC_MODEL, XTTS_VOICE

    cuda = device_name.startswith("cuda")
    settings = settings_at(root, device_name, low=True)
    device = PeakTracker(device_for(device_name))  # the CPU's peak: its models' bytes
    manager = ResidencyManager.from_settings(settings, device)  # type: ignore[arg-type]
    runner = JobRunner(settings, build_engines(settings), manager)
    manifest = Manifest.model_validate({
        "text": "A job under LOW, spoken by XTTS, then converted by RVC.",
        "tts": {"engine": "xtts", "voice": XTTS_VOICE, "language": "en"},
        "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "rmvpe"},
    })  # fmt: skip
    baseline = allocated(device)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(jobs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            device.peak = 0
            out = root / "spool" / "low" / f"low{i}"
            outcome = runner.run(JobInput(f"low{i}", manifest, None, out), lambda _m: None)
            if cuda:
                torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() if cuda else device.global_peak()
            left = allocated(device) - baseline
            cleared = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            if cuda and cleared is not None:
                cleared()
            models_left = allocated(device) - baseline
            stages = stage_bytes(outcome.events)
            runs.append({
                "error": outcome.error.message if outcome.error else None,
                "order": [f"{e.event} {e.key} {e.src}->{e.dst}" for e in outcome.events],
                "stage_bytes": stages,
                "peak_over_largest_stage": round((peak - baseline) / max(stages.values()), 3)
                if stages else None,
                "left_bytes": left,
                "workspace_bytes": left - models_left,
                "left_by_models_bytes": models_left,
            })  # fmt: skip
    finally:
        manager.close()
    return {
        "baseline_bytes": baseline,
        "jobs": runs,
        "back_at_baseline": all(r["left_by_models_bytes"] <= 0 for r in runs),
        "xtts_before_rvc": all(order_ok(r["order"]) for r in runs),
    }


def stage_bytes(events: list[Any]) -> dict[str, int]:
    """The weights each stage brought onto the device (loads and promotes)."""
    stages: dict[str, int] = {}
    for e in events:
        if e.dst == "device" and e.event in ("load", "promote"):
            stage = "tts" if e.key.startswith(("xtts", "f5tts", "vocos")) else "convert"
            stages[stage] = stages.get(stage, 0) + e.bytes
    return stages


def order_ok(order: list[str]) -> bool:
    """XTTS left the device before RVC's models came onto it."""
    xtts_off = next((i for i, o in enumerate(order) if o.startswith(("demote xtts", "drop xtts",
                     "evict xtts"))), None)  # fmt: skip
    rvc_on = next((i for i, o in enumerate(order) if o.endswith("->device") and
                   not o.split()[1].startswith("xtts")), None)  # fmt: skip
    return xtts_off is not None and rvc_on is not None and xtts_off < rvc_on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=["promote", "dtypes", "low"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--engines", default="xtts,f5tts")
    parser.add_argument("--models", type=Path, help="promote, low: built models (else tiny)")
    parser.add_argument("--real-size", action="store_true", help="build published-size models")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    from benchmarks.cold_load import build
    from voicedrop import logs

    logs.configure("json", "error")
    names = args.engines.split(",")
    if args.probe == "dtypes":
        result = dtypes(args.device, names)
    else:
        needs = ("xtts",) if args.probe == "promote" else ("xtts", "rvc")
        root = build(args.real_size, args.models, needs)
        if args.probe == "promote":
            result = promote(args.device, root, args.rounds)
        else:
            result = low(args.device, root, args.jobs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
