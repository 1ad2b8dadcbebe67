"""Cold loads: each model through its library's own loader and through voicedrop's, against
reading the checkpoint's bytes alone.

    python benchmarks/cold_load.py [--real-size] [--device cpu|cuda] [--repeat N] [--json]

Builds random-initialised models in the published checkpoint layouts (voicedrop.tiny:
tiny, or with `--real-size` the libraries' default, published-size architectures: XTTS
1.8 GB, F5 1.3 GB, HuBERT 361 MB, RMVPE 181 MB, a 53 MB RVC voice), then measures three
paths per model, each in a fresh process, like with like — every path ends with the
weights in ordinary memory (on a GPU: on the device), every byte of the checkpoint read:

  read       the checkpoint's bytes read into a buffer (a loop of readinto: one call over
             2 GiB returns short), then, on a GPU, copied to the device;
  library    the library's own loader (XTTS: on a fresh copy of the published model.pth,
             which the library converts and saves back in place on its first load);
  voicedrop  the engine's loader as the residency manager calls it; on the CPU its
             memory-mapped weights are then copied into ordinary memory, as `read` has them.

Each round writes the checkpoints back (fsync) and evicts them from the page cache first
(posix_fadvise, no root needed; `cached_before` is the share mincore still found cached,
0 when cold) and the order of the paths turns each round; `--repeat` rounds, medians kept.
Printed per model: seconds of each path, the bytes each read (`bytes_read`: `read`'s
own count; the tensor bytes the others ended with), the peak RSS the load added, and
`ratio` = voicedrop ÷ read. `--json` prints one JSON object on the last line, keyed by
model name (`xtts`, `f5tts`, `vocos`, `rvc`, `hubert`, `rmvpe`).
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
OF_ENGINE = {"xtts": ("xtts",), "f5tts": ("f5tts", "vocos"), "rvc": ("rvc", "hubert", "rmvpe")}


def built(root: Path) -> tuple[str, ...]:
    """The models of the engines built in `root` (`--engines`)."""
    listed = root / "engines.json"
    names = json.loads(listed.read_text()) if listed.exists() else list(OF_ENGINE)
    return tuple(m for m in MODELS if any(m in OF_ENGINE[e] for e in names))


PATHS = ("read", "library", "voicedrop")
LIBRARIES = ("TTS.tts.models.xtts", "f5_tts.infer.utils_infer", "infer_rvc_python.main", "vocos")


# ---- what each model is made of ------------------------------------------------------------


def files_of(root: Path, model: str) -> list[Path]:
    """The files a load of `model` reads (what `read` reads and what is dropped when cold)."""
    rvc = root / "rvc"
    if model == "hubert":
        return sorted(p for p in (rvc / "hubert").iterdir() if p.suffix in (".bin", ".safetensors"))
    return {
        "xtts": [root / "xtts" / "model.pth"],
        "f5tts": [root / "f5tts" / "model.safetensors"],
        "vocos": [root / "f5tts" / "vocos" / "pytorch_model.bin"],
        "rvc": [rvc / "voice.pth"],
        "rmvpe": [rvc / "rmvpe.pt"],
    }[model]


def placement_for(device: str) -> Any:
    """Where a direct load on `device` builds (and in what precision), as the daemon does."""
    from voicedrop.pipeline.modelspec import CPU

    if not device.startswith("cuda"):
        return CPU
    from voicedrop.pipeline.cuda import CudaDevice

    return CudaDevice(int(device.partition(":")[2] or 0)).placement(warm=False)


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

    def xtts() -> Any:
        return engines.tts["xtts"].models(tts)["model"]

    def f5(role: str) -> Any:
        return engines.tts["f5tts"].models(tts)[role]

    def rvc(role: str) -> Any:
        convert = ConvertRequest("bench", RVC_MODEL, settings.models[RVC_MODEL], spec)
        return engines.convert["rvc"].models(convert)[role]

    f5_engine: Any = engines.tts["f5tts"]
    half = device.startswith("cuda") and engines.convert["rvc"].config.fp16  # type: ignore[attr-defined]
    where = placement_for(device)
    return {
        "xtts": {
            "library": lambda: library.xtts(root / "xtts", device),
            "voicedrop": lambda: xtts().load(where),
        },
        "f5tts": {
            "library": lambda: library.f5_dit(f5_engine.checkpoint, f5_engine.arch[1], device),
            "voicedrop": lambda: f5("dit").load(where),
        },
        "vocos": {
            "library": lambda: library.vocos(root / "f5tts" / "vocos", device),
            "voicedrop": lambda: f5("vocoder").load(where),
        },
        "rvc": {
            "library": lambda: library.rvc_voice(root / "rvc" / "voice.pth", half, device),
            "voicedrop": lambda: rvc("voice").load(where),
        },
        "hubert": {  # the same path: transformers' from_pretrained already builds on meta
            "library": lambda: library.hubert(root / "rvc" / "hubert", device),
            "voicedrop": lambda: rvc("hubert").load(where),
        },
        "rmvpe": {
            "library": lambda: library.rmvpe(root / "rvc" / "rmvpe.pt", half, device),
            "voicedrop": lambda: rvc("rmvpe").load(where),
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


def in_memory(model: Any) -> int:
    """Copy every tensor still backed by a file mapping into ordinary memory (what `read`
    ends with); return the bytes of the model's tensors. On a GPU nothing is mapped."""
    mapped = mapped_ranges()
    total = 0
    for t in tensors_of(model):
        total += t.numel() * t.element_size()
        if t.device.type == "cpu" and t.numel() and any(a <= t.data_ptr() < b for a, b in mapped):
            t.data = t.data.clone()
    return total


def mapped_ranges() -> list[tuple[int, int]]:
    """Address ranges of file mappings of checkpoints (not of libraries)."""
    ranges = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            if line.rstrip().endswith(CHECKPOINT_SUFFIXES):
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def read_bytes(paths: list[Path], device: str = "cpu") -> tuple[Any, int]:
    """Every byte of `paths` into one buffer each, as a load must read them (readinto may
    return short: looped); on a GPU the buffers are then copied to the device. Returns
    the buffers and the bytes read."""
    buffers, total = [], 0
    for path in paths:
        size = path.stat().st_size
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        with path.open("rb", buffering=0) as fh:
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
        total += got
        buffers.append(buf)
    if device.startswith("cuda"):
        import torch

        buffers = [torch.frombuffer(b, dtype=torch.uint8).to(device) for b in buffers]
    return buffers, total


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
    for model in built(root):
        if not fits(files_of(root, model)):
            continue
        scratch = None
        if path == "library" and model == "xtts":  # the library rewrites the file in place
            scratch = fresh_copy(root / "xtts")
            made[model][path] = lambda d=scratch: library_xtts(d, device)
        left_cached = 0.0
        if cold:
            left_cached = drop_cache(
                files_of(root, model) + ([scratch / "model.pth"] if scratch else [])
            )
        reset_peak()
        base = rss_bytes()
        started = time.perf_counter()
        if path == "read":
            loaded, nbytes = read_bytes(files_of(root, model), device)
        else:
            with quiet_stdout():
                loaded = made[model][path]()
            nbytes = in_memory(loaded)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        added = max(0, peak_rss_bytes() - base)
        del loaded
        if scratch is not None:
            shutil.rmtree(scratch.parent, ignore_errors=True)
        results[model] = {"seconds": seconds, "bytes": nbytes, "peak_rss_mb": added / 1e6,
                          "cached_before": left_cached}  # fmt: skip
    return results


def fresh_copy(model_dir: Path) -> Path:
    """A copy of an XTTS folder for the library's loader, flushed and out of the cache."""
    target = Path(tempfile.mkdtemp(prefix="voicedrop-cold-lib-")) / "xtts"
    shutil.copytree(model_dir, target)
    for path in target.iterdir():
        with path.open("rb+") as fh:
            os.fsync(fh.fileno())
    return target


def library_xtts(model_dir: Path, device: str) -> Any:
    from benchmarks import library_loads

    return library_loads.xtts(model_dir, device)


def in_child(
    root: Path, path: str, device: str, *, cold: bool = True
) -> dict[str, dict[str, float]]:
    """Measure one path in a fresh process; `cold`: the checkpoints evicted first."""
    args = [sys.executable, __file__, "--child", str(root), path, "--device", device]
    args += [] if cold else ["--warm"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{path} loads failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def drop_cache(paths: list[Path]) -> float:
    """Evict the files from the page cache and return the fraction still cached after it.
    The kernel honours the request for clean pages only: a file just written (the models
    are built by this run) is written back first (`fsync`), or a first round would read
    dirty pages from memory and call it a disk read."""
    total = cached = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            pages, resident = resident_pages(fd)
            total, cached = total + pages, cached + resident
        finally:
            os.close(fd)
    return cached / total if total else 0.0


def resident_pages(fd: int) -> tuple[int, int]:
    """(pages, pages in the page cache) of an open file, by mincore(2) over a mapping."""
    import mmap

    size = os.fstat(fd).st_size
    if size == 0:
        return 0, 0
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    libc = ctypes.CDLL(None, use_errno=True)
    vec = (ctypes.c_ubyte * pages)()
    with mmap.mmap(fd, size, access=mmap.ACCESS_COPY) as mapped:  # never written
        first = ctypes.c_char.from_buffer(mapped)
        try:
            failed = libc.mincore(ctypes.c_void_p(ctypes.addressof(first)),
                                  ctypes.c_size_t(size), vec)  # fmt: skip
        finally:
            del first
    return pages, 0 if failed else sum(1 for v in vec if v & 1)


# ---- the run ---------------------------------------------------------------------------------


def build(real: bool, where: Path | None, engines: tuple[str, ...] = tuple(OF_ENGINE)) -> Path:
    from voicedrop.tiny.build import build_tiny

    root = where or Path(tempfile.mkdtemp(prefix="voicedrop-cold-"))
    if not (root / "config.toml").exists():
        print(f"building {'real-size' if real else 'tiny'} models in {root} …", file=sys.stderr)
        build_tiny(root, list(engines), rmvpe="rvc" in engines, full=real)
        (root / "engines.json").write_text(json.dumps(list(engines)))
    return root


def fits(paths: list[Path]) -> bool:
    """A library load may hold the weights three times (built, read, copied)."""
    need = 3 * sum(p.stat().st_size for p in paths)
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    return need < info.get("MemAvailable", need + 1)


def run(root: Path, device: str, repeat: int) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {path: [] for path in PATHS}
    for i in range(repeat):  # the order turns each round: drift hits every path alike
        for path in PATHS[i % len(PATHS) :] + PATHS[: i % len(PATHS)]:
            rounds[path].append(in_child(root, path, device))
    results: dict[str, Any] = {}
    for model in built(root):
        size = sum(p.stat().st_size for p in files_of(root, model))
        if model not in rounds["read"][0]:
            results[model] = {"skipped": "needs 3x its checkpoint in free memory", "bytes": size}
            continue
        med = {p: statistics.median(r[model]["seconds"] for r in rounds[p]) for p in PATHS}
        rss = {p: max(r[model]["peak_rss_mb"] for r in rounds[p]) for p in PATHS}
        results[model] = {
            "ratio": round(med["voicedrop"] / med["read"], 3),
            "library_ratio": round(med["library"] / med["read"], 3),
            "speedup": round(med["library"] / med["voicedrop"], 2),
            "bytes_read": {p: int(rounds[p][0][model]["bytes"]) for p in PATHS},
            "bytes": size,
            "seconds": {p: round(v, 4) for p, v in med.items()},
            "rounds": repeat,
            "peak_rss_mb": {p: round(v, 1) for p, v in rss.items()},
            # the share of the files still in the page cache as the clock started (0: cold)
            "cached_before": max(
                r[model].get("cached_before", 0.0) for p in PATHS for r in rounds[p]
            ),
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
        "MB read: read / library / voicedrop",
        "peak RSS MB: read / library / voicedrop",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model, r in results.items():
        if "skipped" in r:
            lines.append(f"| {model} | {r['bytes'] / 1e6:.0f} | skipped: {r['skipped']} |||||||")
            continue
        w, b, m = r["seconds"], r["bytes_read"], r["peak_rss_mb"]
        lines.append(
            f"| {model} | {r['bytes'] / 1e6:.1f} | {w['read']:.3f} | {w['library']:.3f} | "
            f"{w['voicedrop']:.3f} | {r['ratio']:.2f} | {r['library_ratio']:.2f} | "
            f"{b['read'] / 1e6:.1f} / {b['library'] / 1e6:.1f} / {b['voicedrop'] / 1e6:.1f} | "
            f"{m['read']:.0f} / {m['library']:.0f} / {m['voicedrop']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="published-size models")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per path (median)")
    parser.add_argument("--models", type=Path, help="build into / reuse this directory")
    parser.add_argument("--engines", default="xtts,f5tts,rvc", help="whose models to load")
    parser.add_argument("--json", action="store_true", help="also one JSON object, last line")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        root, path = args.child
        print(json.dumps(measure(Path(root), path, args.device, not args.warm)))
        return 0
    from benchmarks.common import machine

    root = build(args.real_size, args.models, tuple(args.engines.split(",")))
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
