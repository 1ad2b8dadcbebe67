"""The device worker on a card: what voicedrop holds once idle, its cold start, a neighbour.

    python benchmarks/gpu_worker.py [--device cuda|cpu] [--rounds 2] [--json]

Real `voicedrop run` daemons on the tiny XTTS built by `voicedrop selftest --keep`, LOW:
- `idle`: a job on a daemon with the device worker (`worker_idle_s` = 3); then, once the
  worker has exited, the device memory NVML counts for the daemon and every process under
  it (goal: 0 bytes), and whether the daemon itself ever mapped libtorch (goal: never);
- `cold`: a one-sentence job dropped on a fresh daemon, drop → report (its audio, whole),
  with the worker (its start inside) against in-process, interleaved, `--rounds` each
  (the ratio of the medians);
- `neighbour`: another process allocating 70 % of the card while a LOW job runs: whether
  either ran out of memory (goal: neither), and how long the job took beside it.

On `--device cpu` (the GPU check's dry run) NVML is absent and the neighbour is skipped:
the code paths are what is checked there. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
JOB = {"text": "The worker speaks this line.", "tts": {"engine": "xtts", "voice": "tiny-xtts"}}
NEIGHBOUR = """
import sys, time, torch
free, total = torch.cuda.mem_get_info()
try:
    held = torch.empty(int(total * 0.7), dtype=torch.uint8, device="cuda")
    print("allocated", flush=True)
except torch.cuda.OutOfMemoryError as exc:
    print("oom", exc, flush=True)
    sys.exit(3)
time.sleep(float(sys.argv[1]))
"""


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def card_bytes(pids: set[int]) -> int | None:
    """Device memory NVML counts for these processes (None without NVML)."""
    from voicedrop.card import NvmlCard

    view = NvmlCard().view()
    return None if view is None else view.held_by(pids)


class Daemon:
    def __init__(self, kept: Path, device: str, worker: str) -> None:
        self.spool = Path(tempfile.mkdtemp(prefix="gpu-worker-")) / "spool"
        (self.spool / "inbox" / ".incoming").mkdir(parents=True)
        env = {
            **os.environ,
            "VOICEDROP_SPOOL": str(self.spool),
            "VOICEDROP_DEVICE": device,
            "VOICEDROP_RESIDENCY__WORKER": worker,
            "VOICEDROP_RESIDENCY__WORKER_IDLE_S": "3",
            "LOW_VRAM": "true",
        }
        self.proc = subprocess.Popen(
            [PY, "-m", "voicedrop", "--config", str(kept / "config.toml"), "run"],
            cwd=kept,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait(lambda s: s.get("pid") == self.proc.pid and s.get("state") == "idle", 120)

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.spool / "state/status.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def wait(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.status()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"daemon: gave up waiting ({self.status().get('state')})")
            time.sleep(0.02)

    def job(self, name: str, during: Any = None) -> float:
        tmp = self.spool / "inbox" / ".incoming" / f"{name}.json"
        tmp.write_text(json.dumps(JOB))
        t0 = time.perf_counter()
        os.rename(tmp, self.spool / "inbox" / f"{name}.json")
        report = self.spool / "outbox" / name / "report.json"
        while not report.exists():
            if (self.spool / "failed" / name).exists() or time.perf_counter() - t0 > 300:
                raise SystemExit(f"job {name} did not succeed")
            if during is not None:
                during()
            time.sleep(0.005)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def idle(kept: Path, device: str) -> dict[str, Any]:
    daemon = Daemon(kept, device, "process")
    seen = {"daemon_maps_torch": False, "max_bytes_during": 0}

    def watch() -> None:
        seen["daemon_maps_torch"] |= maps_torch(daemon.proc.pid)
        held = card_bytes({daemon.proc.pid, *descendants(daemon.proc.pid)})
        seen["max_bytes_during"] = max(seen["max_bytes_during"], held or 0)

    try:
        daemon.job("idle", watch)
        daemon.wait(lambda s: (s.get("workers") or [{}])[0].get("state") == "none", 60)
        time.sleep(1.0)
        pids = {daemon.proc.pid, *descendants(daemon.proc.pid)}
        after = card_bytes(pids)
        torch_after = any(maps_torch(p) for p in pids)
    finally:
        daemon.close()
    return {**seen, "bytes_after_idle_exit": after, "torch_mapped_after": torch_after}


def cold(kept: Path, device: str, rounds: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"process": [], "inline": []}
    for r in range(rounds):
        for mode in ("process", "inline") if r % 2 == 0 else ("inline", "process"):
            daemon = Daemon(kept, device, mode)
            try:
                times[mode].append(daemon.job(f"cold{r}"))
            finally:
                daemon.close()
    mid = {m: statistics.median(t) for m, t in times.items()}
    return {"cold_s": times, "cold_ratio": mid["process"] / mid["inline"]}


def neighbour(kept: Path, device: str) -> dict[str, Any]:
    if device != "cuda":
        return {"skipped": "no card"}
    daemon = Daemon(kept, device, "process")
    try:
        other = subprocess.Popen([PY, "-c", NEIGHBOUR, "20"], stdout=subprocess.PIPE, text=True)
        first = other.stdout.readline().strip() if other.stdout else ""
        seconds = daemon.job("beside")
        other.terminate()
        other.wait(30)
    finally:
        daemon.close()
    return {"neighbour": first, "job_s": seconds, "neighbour_oom": first.startswith("oom")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kept = Path(tempfile.mkdtemp(prefix="gpu-worker-models-")) / "kept"
    subprocess.run(
        [PY, "-m", "voicedrop", "selftest", "--engines", "xtts", "--keep", str(kept), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "VOICEDROP_DEVICE": args.device},
    )
    result: dict[str, Any] = {"device": args.device}
    for name, run in (
        ("idle", lambda: idle(kept, args.device)),
        ("cold", lambda: cold(kept, args.device, args.rounds)),
        ("neighbour", lambda: neighbour(kept, args.device)),
    ):
        try:
            result[name] = run()
        except (SystemExit, Exception) as exc:  # a part that fails is reported, not fatal
            result[name] = {"error": str(exc)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
