"""Cold loads: each model through its library's own loader and through voicedrop's, against
reading the checkpoint's bytes alone.

    python benchmarks/cold_load.py [--real-size] [--device cpu|cuda] [--repeat N] [--json]

Builds random-initialised models in each engine's real checkpoint layout (tiny, or with
`--real-size` the libraries' default, published-size architectures: XTTS 1.8 GB, F5 1.3 GB,
HuBERT 361 MB, RMVPE 181 MB, a 53 MB RVC voice), then for each model measures, each in a
fresh process: `read` (the checkpoint's bytes into memory, nothing else), `library` (the
library's own loader) and `voicedrop` (the engine's loader, as the residency manager calls
it). Every load ends with the weights in memory on the target device: on the CPU each
path reads every page of every tensor once, so a lazily mapped file is not free.

Printed per model: seconds of each path with the page cache warm, and cold (the files
dropped from the cache with posix_fadvise, which needs no root), the peak RSS the load
added, and `ratio` = voicedrop ÷ read (warm). `--json` prints one JSON object on the last
line, keyed by model name (`xtts`, `f5tts`, `vocos`, `rvc`, `hubert`, `rmvpe`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("xtts", "f5tts", "vocos", "rvc", "hubert", "rmvpe")
PATHS = ("read", "library", "voicedrop")
LIBRARIES = ("TTS.tts.models.xtts", "f5_tts.infer.utils_infer", "infer_rvc_python.main", "vocos")


# ---- what each model is made of ------------------------------------------------------------


def files_of(root: Path, model: str) -> list[Path]:
    """The files a load of `model` reads (what `read` reads and what is dropped when cold)."""
    rvc = root / "rvc"
    return {
        "xtts": [root / "xtts" / "model.pth"],
        "f5tts": [root / "f5tts" / "model.safetensors"],
        "vocos": [root / "f5tts" / "vocos" / "pytorch_model.bin"],
        "rvc": [rvc / "voice.pth"],
        "hubert": sorted(
            p for p in (rvc / "hubert").iterdir() if p.suffix in (".bin", ".safetensors")
        ),
        "rmvpe": [rvc / "rmvpe.pt"],
    }[model]


def loaders(root: Path, device: str) -> dict[str, dict[str, Callable[[], Any]]]:
    """Per model, the library's loader and voicedrop's (the engine's ModelSpec.load)."""
    from benchmarks import library_loads as library
    from voicedrop.config import load_settings
    from voicedrop.manifest import ConvertSpec
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, VoiceChoice
    from voicedrop.tiny.build import RVC_MODEL

    settings = load_settings(root / "config.toml", env={}, overrides={"device": device})
    engines = build_engines(settings)
    voice = VoiceChoice(references=(root / "voices" / "reference.wav",), reference_text="x")
    tts = TTSRequest("bench", voice, "en", {})
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="rmvpe")
    convert = ConvertRequest("bench", RVC_MODEL, settings.models[RVC_MODEL], spec)
    xtts = engines.tts["xtts"].models(tts)["model"]
    f5 = engines.tts["f5tts"].models(tts)
    rvc = engines.convert["rvc"].models(convert)
    f5_engine: Any = engines.tts["f5tts"]
    half = device.startswith("cuda") and engines.convert["rvc"].config.fp16  # type: ignore[attr-defined]
    return {
        "xtts": {
            "library": lambda: library.xtts(root / "xtts", device),
            "voicedrop": lambda: xtts.load(device),
        },
        "f5tts": {
            "library": lambda: library.f5_dit(f5_engine.checkpoint, f5_engine.arch[1], device),
            "voicedrop": lambda: f5["dit"].load(device),
        },
        "vocos": {
            "library": lambda: library.vocos(root / "f5tts" / "vocos", device),
            "voicedrop": lambda: f5["vocoder"].load(device),
        },
        "rvc": {
            "library": lambda: library.rvc_voice(root / "rvc" / "voice.pth", half, device),
            "voicedrop": lambda: rvc["voice"].load(device),
        },
        "hubert": {  # the same path: transformers' from_pretrained already builds on meta
            "library": lambda: library.hubert(root / "rvc" / "hubert", device),
            "voicedrop": lambda: rvc["hubert"].load(device),
        },
        "rmvpe": {
            "library": lambda: library.rmvpe(root / "rvc" / "rmvpe.pt", half, device),
            "voicedrop": lambda: rvc["rmvpe"].load(device),
        },
    }


# ---- measurements, in a fresh process per path ---------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def reset_peak() -> None:
    """Release what the allocator keeps and restart the RSS high-water mark (Linux >= 4.0)."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def tensors_of(model: Any) -> list[Any]:
    import torch

    if isinstance(model, torch.nn.Module):
        return [*model.parameters(), *model.buffers()]
    return list(model.tensors())


def touch(model: Any) -> float:
    """Read an element of every page of every tensor: a mapped checkpoint is faulted in."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0.0
    for t in tensors_of(model):
        if t.device.type == "cpu" and t.numel():
            flat = t.detach().reshape(-1)
            total += float(flat[:: max(1, page // flat.element_size())].float().sum())
    return total


def read_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with path.open("rb", buffering=0) as fh:
            buf = bytearray(path.stat().st_size)  # into memory, as a load must
            total += fh.readinto(buf) or 0
    return total


def measure(root: Path, path: str, device: str, cold: bool) -> dict[str, dict[str, float]]:
    """In a child: import everything first, then load each model the one way asked for,
    timing it and taking the RSS it added at its peak, and free it before the next."""
    import torch

    from voicedrop import logs
    from voicedrop.pipeline.engines.common import quiet_stdout

    logs.configure("json", "error")
    made = loaders(root, device)
    for module in LIBRARIES:  # imported before any clock starts, for both paths alike
        __import__(module)
    results: dict[str, dict[str, float]] = {}
    for model in MODELS:
        if not fits(files_of(root, model)):
            continue
        if cold:
            drop_cache(files_of(root, model))
        reset_peak()
        base = rss_bytes()
        started = time.perf_counter()
        if path == "read":
            loaded: Any = read_bytes(files_of(root, model))
        else:
            with quiet_stdout():
                loaded = made[model][path]()
            touch(loaded)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        added = max(0, peak_rss_bytes() - base)
        del loaded
        results[model] = {"seconds": seconds, "peak_rss_mb": added / 1e6}
    return results


def in_child(root: Path, path: str, device: str, cold: bool) -> dict[str, dict[str, float]]:
    args = [sys.executable, __file__, "--child", str(root), path, "--device", device]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        args + (["--cold"] if cold else []), capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{path} loads failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def drop_cache(paths: list[Path]) -> None:
    """Evict the files from the page cache (a request the kernel honours for clean pages)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---- the run ---------------------------------------------------------------------------------


def build(real: bool, where: Path | None) -> Path:
    from voicedrop.tiny.build import build_tiny

    root = where or Path(tempfile.mkdtemp(prefix="voicedrop-cold-"))
    if not (root / "config.toml").exists():
        print(f"building {'real-size' if real else 'tiny'} models in {root} …", file=sys.stderr)
        build_tiny(root, ["xtts", "f5tts", "rvc"], rmvpe=True, full=real)
    return root


def fits(paths: list[Path]) -> bool:
    """A library load may hold the weights three times (built, read, copied)."""
    need = 3 * sum(p.stat().st_size for p in paths)
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    return need < info.get("MemAvailable", need + 1)


def run(root: Path, device: str, repeat: int) -> dict[str, Any]:
    cold = {path: in_child(root, path, device, cold=True) for path in PATHS}
    for model in MODELS:
        read_bytes(files_of(root, model))  # warm the cache
    warm: dict[str, list[dict[str, dict[str, float]]]] = {path: [] for path in PATHS}
    for _ in range(repeat):  # interleaved, so that drift hits all paths alike
        for path in PATHS:
            warm[path].append(in_child(root, path, device, cold=False))
    results: dict[str, Any] = {}
    for model in MODELS:
        size = sum(p.stat().st_size for p in files_of(root, model))
        if model not in cold["read"]:
            results[model] = {"skipped": "needs 3x its checkpoint in free memory", "bytes": size}
            continue
        med = {p: statistics.median(run[model]["seconds"] for run in warm[p]) for p in PATHS}
        rss = {p: max(run[model]["peak_rss_mb"] for run in warm[p]) for p in PATHS}
        results[model] = {
            "ratio": round(med["voicedrop"] / med["read"], 3),
            "library_ratio": round(med["library"] / med["read"], 3),
            "speedup": round(med["library"] / med["voicedrop"], 2),
            "bytes": size,
            "warm_s": {p: round(v, 4) for p, v in med.items()},
            "cold_s": {p: round(cold[p][model]["seconds"], 4) for p in PATHS},
            "cold_ratio": round(
                cold["voicedrop"][model]["seconds"] / cold["read"][model]["seconds"], 3
            ),
            "peak_rss_mb": {p: round(v, 1) for p, v in rss.items()},
        }
    return results


def table(results: dict[str, Any]) -> str:
    head = (
        "model",
        "MB",
        "read s",
        "library s",
        "voicedrop s",
        "ratio",
        "library ratio",
        "cold: read / library / voicedrop s",
        "peak RSS MB: read / library / voicedrop",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model, r in results.items():
        if "skipped" in r:
            lines.append(f"| {model} | {r['bytes'] / 1e6:.0f} | skipped: {r['skipped']} |||||||")
            continue
        w, c, m = r["warm_s"], r["cold_s"], r["peak_rss_mb"]
        lines.append(
            f"| {model} | {r['bytes'] / 1e6:.1f} | {w['read']:.3f} | {w['library']:.3f} | "
            f"{w['voicedrop']:.3f} | {r['ratio']:.2f} | {r['library_ratio']:.2f} | "
            f"{c['read']:.3f} / {c['library']:.3f} / {c['voicedrop']:.3f} | "
            f"{m['read']:.0f} / {m['library']:.0f} / {m['voicedrop']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="published-size models")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per path (median)")
    parser.add_argument("--models", type=Path, help="build into / reuse this directory")
    parser.add_argument("--json", action="store_true", help="also one JSON object, last line")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        root, path = args.child
        print(json.dumps(measure(Path(root), path, args.device, args.cold)))
        return 0
    from benchmarks.common import machine

    root = build(args.real_size, args.models)
    try:
        results = run(root, args.device, args.repeat)
    finally:
        if args.models is None:  # ours to remove: real-size models take 3.6 GB
            shutil.rmtree(root, ignore_errors=True)
    size = "real-size" if args.real_size else "tiny"
    print(f"cold loads, {size} models, {machine(args.device)}, {time.strftime('%Y-%m-%d')}")
    print(table(results))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
