"""Residency benchmark: the original, naive LOW against voicedrop's policies, on real bytes.

    python benchmarks/residency.py [--device cpu|cuda] [--jobs 8] [--scale 1.0] [--json FILE]

Synthetic torch models with the parameter counts of the real checkpoints
(shared/ENGINES.md) are saved as safetensors and run through a mixed queue of
TTS → RVC jobs under four set-ups:
  seed-low    LOW_VRAM=true as the original design does it: rebuild from disk every time
  low+warm    voicedrop LOW: leave the GPU after each stage, keep weights in host memory
  budget      keep models while they fit a 3.5 GB budget (a 4 GB card), evict by score
  normal      LOW_VRAM=false: everything stays loaded
It prints per set-up the peak device memory, total time, load and promote
seconds, and the ratios
  P1 = LOW peak / largest single model's peak        (goal <= 1.05)
  P2 = warm promote time / pinned memcpy, same bytes  (goal <= 1.5; CUDA only)
  LOW/NORMAL throughput.
On CPU the device and the warm tier are the same RAM, so it measures the disk
tier against the host tier; on CUDA it measures VRAM for real.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakTracker
from voicedrop import logs
from voicedrop.config import GB
from voicedrop.pipeline.cuda import CudaDevice
from voicedrop.pipeline.device import CPUDevice, Device
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.policies import BudgetPolicy, LowPolicy, NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager

# parameters and dtype of the published checkpoints (shared/ENGINES.md)
MODELS: dict[str, tuple[int, torch.dtype]] = {
    "xtts": (467_500_000, torch.float32),  # model.pth ~1.87 GB fp32
    "f5tts": (336_000_000, torch.float32),  # F5-TTS v1 Base
    "vocos": (13_500_000, torch.float32),  # mel-24 kHz vocoder
    "hubert": (95_000_000, torch.float32),  # ~361 MB
    "rmvpe": (45_250_000, torch.float32),  # rmvpe.pt ~181 MB
    "rvc:alice": (26_500_000, torch.float16),  # an RVC v2 voice ~53 MB fp16
    "rvc:bob": (26_500_000, torch.float16),
}
QUEUE = [
    ("xtts", "alice"),
    ("f5tts", "bob"),
    ("xtts", None),
    ("f5tts", "alice"),
    ("xtts", "bob"),
    ("f5tts", None),
    ("xtts", "alice"),
    ("f5tts", "bob"),
]
CHUNK = 32 * 1024 * 1024  # elements per parameter tensor
ACTIVATION_SHARE = 0.05  # working memory of a forward pass, as a share of the weights


class Synthetic(torch.nn.Module):
    def __init__(self, params: int, dtype: torch.dtype, device: str = "cpu") -> None:
        super().__init__()
        sizes = [CHUNK] * (params // CHUNK) + ([params % CHUNK] if params % CHUNK else [])
        self.chunks = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(n, dtype=dtype, device=device), requires_grad=False)
            for n in sizes
        )

    def forward(self) -> torch.Tensor:
        """Read every weight once and take working memory, as an inference pass does."""
        nbytes = sum(p.numel() * p.element_size() for p in self.chunks)
        scratch = torch.empty(
            int(nbytes * ACTIVATION_SHARE), dtype=torch.uint8, device=self.chunks[0].device
        )
        total = sum(p.float().sum() for p in self.chunks)
        del scratch
        return total


def write_checkpoints(folder: Path, scale: float) -> dict[str, Path]:
    paths = {}
    gen = torch.Generator().manual_seed(0)
    for key, (params, dtype) in MODELS.items():
        model = Synthetic(int(params * scale), dtype)
        for p in model.chunks:
            p.data.copy_(torch.randn(p.numel(), generator=gen).to(dtype))
        paths[key] = folder / (key.replace(":", "_") + ".safetensors")
        save_file(model.state_dict(), str(paths[key]))
    return paths


def spec(key: str, path: Path, scale: float) -> ModelSpec:
    params, dtype = MODELS[key]

    def load(placement: Any) -> Synthetic:
        # the naive path every engine has: build the module, read the checkpoint
        model = Synthetic(int(params * scale), dtype)
        model.load_state_dict(load_file(str(path)))  # copies: every byte is read
        return model.to(placement.build_on)

    return ModelSpec(key, load, checkpoint=path)


def run_job(
    manager: ResidencyManager, specs: dict[str, ModelSpec], tts: str, voice: str | None
) -> None:
    roles = {"model": specs[tts], **({"vocoder": specs["vocos"]} if tts == "f5tts" else {})}
    with manager.acquire_all(roles) as models:  # a stage's set, as the engines declare it
        for model in models.values():
            model()
    if voice is not None:
        rvc = {"hubert": specs["hubert"], "rmvpe": specs["rmvpe"], "voice": specs[f"rvc:{voice}"]}
        with manager.acquire_all(rvc) as models:
            for model in models.values():
                model()


@dataclass
class Result:
    name: str
    jobs: int
    seconds: float
    peak_gb: float
    loads: int
    load_s: float
    promotes: int
    promote_s: float
    xtts_promote_s: float | None


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_device(device: str) -> Device:
    return CudaDevice() if device == "cuda" else CPUDevice()


def run_policy(
    name: str,
    manager_kw: dict[str, Any],
    device: str,
    specs: dict[str, ModelSpec],
    jobs: list[tuple[str, str | None]],
) -> Result:
    tracker = PeakTracker(make_device(device))
    manager = ResidencyManager(tracker, **manager_kw)  # type: ignore[arg-type]
    synchronize(device)
    started = time.perf_counter()
    with manager.recording() as events:
        for tts, voice in jobs:
            run_job(manager, specs, tts, voice)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = tracker.global_peak()
    manager.close()
    gc.collect()
    loads = [e for e in events if e.event == "load"]
    promotes = [e for e in events if e.event == "promote"]
    xtts = [e.seconds for e in promotes if e.key == "xtts"]
    return Result(
        name,
        len(jobs),
        round(seconds, 3),
        round(peak / GB, 3),
        len(loads),
        round(sum(e.seconds for e in loads), 3),
        len(promotes),
        round(sum(e.seconds for e in promotes), 3),
        round(sum(xtts) / len(xtts), 5) if xtts else None,
    )


def pinned_memcpy_s(nbytes: int) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    for _ in range(2):
        torch.cuda.synchronize()
        started = time.perf_counter()
        dev = host.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        took = time.perf_counter() - started
        del dev
    return took


def setups(budget_gb: float, scale: float) -> dict[str, dict[str, Any]]:
    return {
        "normal": {"policy": NormalPolicy()},
        "budget": {
            "policy": BudgetPolicy(int(budget_gb * scale * GB), 0),
            "warm_tier": True,
            "warm_budget": 16 * GB,
        },
        "low+warm": {
            "policy": LowPolicy(),
            "warm_tier": True,
            "warm_budget": 16 * GB,
            "low_vram_mode": True,
        },
        "seed-low": {"policy": LowPolicy(), "warm_tier": False, "low_vram_mode": True},
        "xtts alone": {"policy": NormalPolicy()},
    }


def run_isolated(name: str, args: argparse.Namespace, folder: Path) -> Result:
    """Each set-up in a fresh process: one set-up's allocator and page-cache history
    (60 rebuilds for seed-low) measurably slowed whichever ran after it."""
    cmd = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--jobs",
        str(args.jobs),
        "--scale",
        str(args.scale),
        "--budget-gb",
        str(args.budget_gb),
        "--one",
        name,
        "--checkpoints",
        str(folder),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return Result(**json.loads(out.strip().splitlines()[-1]))


def run_one(args: argparse.Namespace) -> None:
    """Child: run one set-up on the checkpoints in --checkpoints; print its Result as JSON."""
    paths = {k: args.checkpoints / (k.replace(":", "_") + ".safetensors") for k in MODELS}
    specs = {k: spec(k, p, args.scale) for k, p in paths.items()}
    run_policy("warm-up", {"policy": NormalPolicy()}, args.device, specs, [("xtts", "alice")])
    jobs = [QUEUE[i % len(QUEUE)] for i in range(args.jobs)]
    if args.one == "xtts alone":
        jobs = [("xtts", None)]
    kw = setups(args.budget_gb, args.scale)[args.one]
    print(json.dumps(asdict(run_policy(args.one, kw, args.device, specs, jobs))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every model (tests)")
    parser.add_argument(
        "--budget-gb",
        type=float,
        default=3.5,
        help="budget policy limit (before scaling): a 4 GB card less headroom",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logs.configure("console", "warning")
    if args.one:
        run_one(args)
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"residency benchmark on {name}, torch {torch.__version__}, {args.jobs} jobs, "
        f"scale {args.scale}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoints(Path(tmp), args.scale)
        alone = run_isolated("xtts alone", args, Path(tmp))
        names = [n for n in setups(args.budget_gb, args.scale) if n != "xtts alone"]
        results = [run_isolated(n, args, Path(tmp)) for n in names]
    print(
        f"{'set-up':10s} {'peak GB':>8s} {'total s':>8s} {'jobs/s':>7s} {'loads':>6s} "
        f"{'load s':>7s} {'promotes':>8s} {'promote s':>9s}"
    )
    for r in results:
        print(
            f"{r.name:10s} {r.peak_gb:8.3f} {r.seconds:8.2f} {r.jobs / r.seconds:7.3f} "
            f"{r.loads:6d} {r.load_s:7.2f} {r.promotes:8d} {r.promote_s:9.3f}"
        )
    by = {r.name: r for r in results}
    figures: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "jobs": args.jobs,
        "scale": args.scale,
        "results": [asdict(r) for r in results],
        "xtts_alone_peak_gb": alone.peak_gb,
        "P1_low_warm": round(by["low+warm"].peak_gb / alone.peak_gb, 3),
        "P1_seed_low": round(by["seed-low"].peak_gb / alone.peak_gb, 3),
        "low_warm_over_normal_throughput": round(by["normal"].seconds / by["low+warm"].seconds, 3),
        "seed_low_over_normal_throughput": round(by["normal"].seconds / by["seed-low"].seconds, 3),
    }
    print(
        f"P1 = LOW peak / largest single model's peak: low+warm {figures['P1_low_warm']}, "
        f"seed-low {figures['P1_seed_low']} (goal <= 1.05; xtts alone {alone.peak_gb} GB)"
    )
    if args.device == "cuda" and by["low+warm"].xtts_promote_s:
        nbytes = int(MODELS["xtts"][0] * args.scale) * 4
        figures["P2"] = round(by["low+warm"].xtts_promote_s / pinned_memcpy_s(nbytes), 3)
        print(
            f"P2 = warm promote / pinned memcpy (xtts, {nbytes / GB:.2f} GB): {figures['P2']} "
            "(goal <= 1.5)"
        )
    else:
        print("P2 = n/a on CPU (device and warm tier are the same memory)")
    print(
        f"LOW/NORMAL throughput: low+warm {figures['low_warm_over_normal_throughput']}, "
        f"seed-low {figures['seed_low_over_normal_throughput']}"
    )
    print(
        f"warm tier vs disk rebuild: {by['low+warm'].load_s + by['low+warm'].promote_s:.2f} s "
        f"vs {by['seed-low'].load_s:.2f} s of model placement for the same queue"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
