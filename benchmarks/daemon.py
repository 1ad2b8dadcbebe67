"""Daemon benchmark: drop → claim latency, throughput, idle cost.

    .venv/bin/python benchmarks/daemon.py [--jobs 1000] [--samples 50] [--idle-seconds 60]

Runs real `voicedrop run` processes (noop engine, CPU device) on a temp spool
and prints:
- drop → claim latency (p50/p95) with inotify and with polling: time from the
  rename of a manifest into the inbox until the daemon has moved it to work/, in an
  empty inbox and in one cluttered with 10,000 unrelated files (a NAS share);
- jobs per second for N tiny manifests through the noop engine (`run --once`);
- idle CPU % and RSS of a waiting daemon over the idle window.
Targets: p95 claim <= 50 ms (inotify), <= 20 ms (inotify, 10,000 unrelated files);
>= 100 jobs/s; idle CPU < 0.1 % (both modes, 10,000 unrelated files too), RSS < 80 MB.
Absolute times on shared machines are noisy: compare within one run.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = {"text": "x", "tts": {"engine": "noop", "options": {"seconds": 0.05}}}


def env_for(spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEDROP_")}
    env.update(
        {
            "VOICEDROP_SPOOL": str(spool),
            "VOICEDROP_DEVICE": "cpu",
            "VOICEDROP_LOG_FORMAT": "json",
            "VOICEDROP_LOG_LEVEL": "warning",
            **extra,
        }
    )
    return env


def start(spool: Path, **extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicedrop", "run"],
        env=env_for(spool, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = spool / "state" / "status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = json.loads(status.read_text())
            if data.get("pid") == proc.pid and data.get("state") == "idle":
                return proc
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("daemon did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def drop(spool: Path, name: str) -> float:
    tmp = spool / "inbox" / ".incoming" / name
    tmp.write_text(json.dumps(JOB))
    t0 = time.perf_counter()
    os.rename(tmp, spool / "inbox" / name)
    return t0


def clutter_inbox(spool: Path, clutter: int) -> None:
    """`clutter` files that are not jobs: recordings, thumbnails, editor backups."""
    inbox = spool / "inbox"
    (inbox / ".incoming").mkdir(parents=True, exist_ok=True)
    kinds = (".wav", ".jpg", ".json.partial", ".txt", ".json~")
    for i in range(clutter):
        (inbox / f"take-{i:05}{kinds[i % len(kinds)]}").write_bytes(b"x")


def claim_latency(mode: str, samples: int, clutter: int = 0) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        clutter_inbox(spool, clutter)
        proc = start(spool, VOICEDROP_WATCHER__MODE=mode, VOICEDROP_WATCHER__POLL_INTERVAL_S="0.25")
        latencies = []
        try:
            for i in range(samples):
                name = f"lat-{i}.json"
                t0 = drop(spool, name)
                while (spool / "inbox" / name).exists():
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - t0)
                while not (spool / "outbox" / f"lat-{i}" / "report.json").exists():
                    time.sleep(0.002)
        finally:
            stop(proc)
    return latencies


def throughput(jobs: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        (spool / "inbox").mkdir(parents=True)
        past = time.time() - 60
        for i in range(jobs):
            path = spool / "inbox" / f"job-{i:05d}.json"
            path.write_text(json.dumps(JOB))
            os.utime(path, (past, past))
        log = Path(tmp) / "log.jsonl"
        t0 = time.perf_counter()
        with log.open("w") as fh:
            subprocess.run(
                [sys.executable, "-m", "voicedrop", "run", "--once"],
                check=True,
                env=env_for(spool, VOICEDROP_LOG_LEVEL="info"),
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        wall = time.perf_counter() - t0
        stamps = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        starts = [s["timestamp"] for s in stamps if s.get("event") == "job.start"]
        ends = [s["timestamp"] for s in stamps if s.get("event") == "job.end"]
        done = len(list((spool / "outbox").iterdir()))
        assert done == jobs, f"only {done} of {jobs} jobs done"
    span = (datetime.fromisoformat(ends[-1]) - datetime.fromisoformat(starts[0])).total_seconds()
    return jobs / wall, jobs / span


def idle_cost(seconds: float, mode: str = "inotify", clutter: int = 0) -> tuple[float, float]:
    """CPU % and peak RSS of an idle daemon; `clutter` unrelated files lie in its inbox
    (a NAS share collects thumbnails, editor backups, recordings)."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        clutter_inbox(spool, clutter)
        proc = start(spool, VOICEDROP_WATCHER__MODE=mode)
        try:
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu() -> int:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])

            def rss_mb() -> float:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
                return 0.0

            time.sleep(1.0)  # let start-up settle
            c0, t0, peak = cpu(), time.monotonic(), rss_mb()
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                peak = max(peak, rss_mb())
            used = (cpu() - c0) / ticks
            elapsed = time.monotonic() - t0
        finally:
            stop(proc)
    return 100 * used / elapsed, peak


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--clutter", type=int, default=10_000, help="unrelated inbox files")
    args = parser.parse_args()
    print(f"voicedrop daemon benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    polls = max(5, args.samples // 5)
    for mode, n, clutter in (
        ("inotify", args.samples, 0),
        ("inotify", args.samples, args.clutter),
        ("polling", polls, 0),
        ("polling", polls, args.clutter),
    ):
        lat = claim_latency(mode, n, clutter)
        print(
            f"claim latency {mode:8s} n={n:3d}  {clutter:5d} other files  "
            f"p50 {1000 * pct(lat, 50):7.1f} ms  p95 {1000 * pct(lat, 95):7.1f} ms"
        )
    overall, steady = throughput(args.jobs)
    print(
        f"throughput    noop     n={args.jobs}  {steady:6.1f} jobs/s steady "
        f"({overall:.1f} jobs/s including start-up)"
    )
    for mode, clutter in (
        ("inotify", 0),
        ("inotify", args.clutter),
        ("polling", 0),
        ("polling", args.clutter),
    ):
        cpu, rss = idle_cost(args.idle_seconds, mode, clutter)
        print(
            f"idle          {mode:8s} {args.idle_seconds:.0f} s, {clutter:5d} other files in the "
            f"inbox  CPU {cpu:.3f} %  peak RSS {rss:.1f} MB"
        )


if __name__ == "__main__":
    main()
