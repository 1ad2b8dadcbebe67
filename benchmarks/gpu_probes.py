"""Measurements only a GPU can give, each a subcommand that prints one JSON object last.

    python benchmarks/gpu_probes.py promote|dtypes|low [--device cuda] [--engines ...]

- `promote`: a model in the warm tier (pinned host memory) promoted by the residency
  manager, against a plain pinned-memory copy of the same bytes to the device
  (`promote_over_memcpy`: the manager's overhead on the copy itself).
- `dtypes`: each model of the engines, loaded directly onto the device and read ahead
  into the warm tier then promoted: the precision and device of its weights per path
  (they must agree: float16 where the library runs float16, on a card of capability 7+).
- `low`: jobs through a LOW-policy runner on the device, the device's allocated bytes
  after each job against the baseline before the first (a model that leaves tensors
  behind shows here), and the pinned host bytes (`torch.cuda.host_memory_stats()` where
  torch has it) against `warm_budget_gb`.

On `--device cpu` they run the same code on the CPU (the GPU check's dry run in CI):
the figures then mean nothing, the imports and the code paths are what is checked.
"""

from __future__ import annotations

import argparse
import json
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


def promote(device_name: str, mb: int, rounds: int) -> dict[str, Any]:
    import torch

    from voicedrop.config import load_settings
    from voicedrop.pipeline.modelspec import ModelSpec
    from voicedrop.pipeline.residency import ResidencyManager

    device = device_for(device_name)
    settings = load_settings(env={}, overrides={"device": device.name.split(":")[0]})
    numel = mb * 1024 * 1024 // 2
    manager = ResidencyManager.from_settings(settings, device)
    spec = ModelSpec("probe", lambda p: torch.nn.Linear(1, numel, bias=False).half().to(p.build_on))
    cuda = device_name.startswith("cuda")
    copies, promotes = [], []
    try:
        host = torch.empty(numel, dtype=torch.float16, pin_memory=cuda)
        for _ in range(rounds):  # interleaved
            started = time.perf_counter()
            on = host.to(device.name, non_blocking=True)
            if cuda:
                torch.cuda.synchronize()
            copies.append(time.perf_counter() - started)
            del on
            manager.warm(spec)  # into the warm tier (pinned under CUDA)
            with manager.recording() as events, manager.acquire(spec):
                pass
            moved = [e.seconds for e in events if e.event in ("promote", "load")]
            promotes.append(moved[0] if moved else float("nan"))
    finally:
        manager.close()
    best_copy, best_promote = min(copies), min(promotes)
    return {
        "bytes": numel * 2,
        "memcpy_s": round(best_copy, 5),
        "promote_s": round(best_promote, 5),
        "promote_over_memcpy": round(best_promote / best_copy, 3) if best_copy else None,
        "rounds": rounds,
    }


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
    return {"models": found, "paths_agree": agree}


def low(device_name: str, names: list[str], jobs: int) -> dict[str, Any]:
    import torch

    from voicedrop.manifest import Manifest
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.residency import ResidencyManager
    from voicedrop.pipeline.runner import JobInput, JobRunner
    from voicedrop.tiny.build import F5_VOICE, RVC_MODEL, XTTS_VOICE

    manifests = {
        "xtts": {"tts": {"engine": "xtts", "voice": XTTS_VOICE}},
        "f5tts": {"tts": {"engine": "f5tts", "voice": F5_VOICE}},
        "rvc": {"tts": {"engine": "espeak"},
                "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "rmvpe"}},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = tiny(names, Path(tmp) / "models")
        settings = base.model_copy(
            update={"spool": Path(tmp) / "spool", "low_vram": True, "device": device_name[:4]}
        )
        device = device_for(device_name)
        manager = ResidencyManager.from_settings(settings, device)
        runner = JobRunner(settings, build_engines(settings), manager)
        baseline = allocated(device)
        after: list[dict[str, Any]] = []
        try:
            for i in range(jobs):
                name = names[i % len(names)]
                manifest = Manifest.model_validate({"text": "A job under LOW.", **manifests[name]})
                job = JobInput(f"low{i}", manifest, None, Path(tmp) / "out" / f"low{i}")
                outcome = runner.run(job, lambda _m: None)
                if device_name.startswith("cuda"):
                    torch.cuda.synchronize()
                after.append({
                    "engine": name,
                    "error": outcome.error.message if outcome.error else None,
                    "allocated_over_baseline": allocated(device) - baseline,
                })  # fmt: skip
            pinned = None
            stats = getattr(torch.cuda, "host_memory_stats", None)
            if device_name.startswith("cuda") and stats is not None:
                pinned = {k: v for k, v in stats().items() if "allocated" in k or "reserved" in k}
            warm = sum(v.host_bytes for v in manager.models().values())
        finally:
            manager.close()
    return {
        "baseline_bytes": baseline,
        "jobs": after,
        "back_at_baseline": all(j["allocated_over_baseline"] <= 0 for j in after),
        "warm_tier_bytes": warm,
        "warm_budget_bytes": int(settings.residency.warm_budget_gb * 1024**3),
        "pinned_host": pinned,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=["promote", "dtypes", "low"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--engines", default="xtts,f5tts")
    parser.add_argument("--mb", type=int, default=512, help="promote: the model's size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    from voicedrop import logs

    logs.configure("json", "error")
    names = args.engines.split(",")
    if args.probe == "promote":
        result = promote(args.device, args.mb, args.rounds)
    elif args.probe == "dtypes":
        result = dtypes(args.device, names)
    else:
        result = low(args.device, names, args.jobs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
