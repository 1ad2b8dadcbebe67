"""The device worker process against the daemon that computes in itself, side by side.

    .venv/bin/python benchmarks/worker.py [--rounds 3] [--jobs 100] [--json]

Real `voicedrop run` processes on temp spools, CPU device, `[residency] worker` =
"process" (A) and "inline" (B), interleaved, the order flipped each round. Per round:
- cold: a fresh daemon, one one-sentence espeak job dropped: drop → report (the job's
  first and only audio comes at its end, so this is its time to first audio), with the
  worker's start (spawn, imports, engines) inside it for A;
- warm: the next such job on the same daemon;
- throughput: `--jobs` tiny noop jobs renamed in at once, jobs per second;
- idle: the daemon's RSS once idle — for A after its worker exited (`worker_idle_s` = 1),
  for B a daemon that never ran a job (the core daemon): their ratio is what an idle
  daemon with a worker costs beside one that never loaded anything.
Goals (the worker's issue): idle ratio ≤ 1.1; cold A ÷ cold B ≤ 1.1; warm A ÷ warm B
≤ 1.05 (or +5 ms); throughput A ≥ 90 % of B. Absolute times on a shared machine are noisy:
the ratios of one run are what counts.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.daemon import start, stop

SPEAK = {"text": "Hello there.", "tts": {"engine": "espeak", "language": "en"}}
TINY = {"text": "x", "tts": {"engine": "noop", "options": {"seconds": 0.05}}}


def mode_env(mode: str) -> dict[str, str]:
    return {"VOICEDROP_RESIDENCY__WORKER": mode, "VOICEDROP_RESIDENCY__WORKER_IDLE_S": "1"}


def drop(spool: Path, name: str, job: Mapping[str, Any]) -> None:
    tmp = spool / "inbox" / ".incoming" / f"{name}.partial"
    tmp.write_text(json.dumps(job))
    os.rename(tmp, spool / "inbox" / f"{name}.json")


def wait_report(spool: Path, name: str, timeout: float = 300) -> None:
    report = spool / "outbox" / name / "report.json"
    deadline = time.monotonic() + timeout
    while not report.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no report for {name}")
        time.sleep(0.001)


def timed_job(spool: Path, name: str, job: Mapping[str, Any]) -> float:
    t0 = time.perf_counter()
    drop(spool, name, job)
    wait_report(spool, name)
    return time.perf_counter() - t0


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_state(spool: Path) -> str | None:
    try:
        workers = json.loads((spool / "state" / "status.json").read_text()).get("workers") or []
    except (OSError, ValueError):
        return None
    return workers[0].get("state") if workers else None


def one(mode: str, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        (spool / "inbox" / ".incoming").mkdir(parents=True)
        proc = start(spool, **mode_env(mode))
        try:
            time.sleep(2.0)  # its start-up work (warm-up imports) done: the core daemon idle
            idle_core = rss(proc.pid)
            cold = timed_job(spool, "cold", SPEAK)
            warm = timed_job(spool, "warm", SPEAK)
            t0 = time.perf_counter()
            for i in range(jobs):
                drop(spool, f"t{i:04}", TINY)
            wait_report(spool, f"t{jobs - 1:04}")
            while len(list((spool / "outbox").iterdir())) < jobs + 2:
                time.sleep(0.005)
            rate = jobs / (time.perf_counter() - t0)
            if mode == "process":  # the worker exits after 1 s idle; then the daemon alone
                deadline = time.monotonic() + 60
                while worker_state(spool) != "none" and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.5)
            idle = rss(proc.pid) if mode == "process" else idle_core
        finally:
            stop(proc)
    return {"cold_s": cold, "warm_s": warm, "jobs_per_s": rate, "idle_rss": idle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    got: dict[str, list[dict[str, float]]] = {"process": [], "inline": []}
    for r in range(args.rounds):
        for mode in ("process", "inline") if r % 2 == 0 else ("inline", "process"):
            got[mode].append(one(mode, args.jobs))

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in got[mode])

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    figures = {
        "commit": commit,
        "rounds": args.rounds,
        "idle_rss_ratio": med("process", "idle_rss") / med("inline", "idle_rss"),
        "idle_rss_mb": {m: med(m, "idle_rss") / 2**20 for m in got},
        "cold_ratio": med("process", "cold_s") / med("inline", "cold_s"),
        "cold_s": {m: med(m, "cold_s") for m in got},
        "warm_ratio": med("process", "warm_s") / med("inline", "warm_s"),
        "warm_ms": {m: med(m, "warm_s") * 1000 for m in got},
        "throughput_ratio": med("process", "jobs_per_s") / med("inline", "jobs_per_s"),
        "jobs_per_s": {m: med(m, "jobs_per_s") for m in got},
    }
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(f"commit {commit}, {args.rounds} rounds, medians (A = worker process, B = in-process)")
    print(f"idle RSS       A {figures['idle_rss_mb']['process']:.0f} MB  "
          f"B {figures['idle_rss_mb']['inline']:.0f} MB   A/B {figures['idle_rss_ratio']:.2f} "
          "[goal <= 1.1]")  # fmt: skip
    print(f"cold job       A {figures['cold_s']['process']:.3f} s  "
          f"B {figures['cold_s']['inline']:.3f} s   A/B {figures['cold_ratio']:.2f} "
          "[goal <= 1.1]")  # fmt: skip
    print(f"warm job       A {figures['warm_ms']['process']:.1f} ms  "
          f"B {figures['warm_ms']['inline']:.1f} ms   A/B {figures['warm_ratio']:.2f} "
          "[goal <= 1.05 or +5 ms]")  # fmt: skip
    print(f"tiny jobs/s    A {figures['jobs_per_s']['process']:.1f}  "
          f"B {figures['jobs_per_s']['inline']:.1f}   A/B {figures['throughput_ratio']:.2f} "
          "[goal >= 0.9]")  # fmt: skip


if __name__ == "__main__":
    main()
