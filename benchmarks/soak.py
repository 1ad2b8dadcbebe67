"""Soak: thousands of jobs through one real daemon, watching for memory that creeps.

    python benchmarks/soak.py [--jobs 2000] [--policies low,normal] [--every 100] [--json]

Memory creep over many generations is the failure long-running TTS servers are known for
(a cache that grows, tensors a demote leaves behind). One `voicedrop run` process per
policy gets `--jobs` jobs, fed in batches: espeak, XTTS, F5-TTS and RVC conversions (pm,
harvest and rmvpe) mixed, all on the tiny models (`voicedrop.tiny`), on the CPU device.
Every `--every` jobs it prints the daemon's RSS (VmRSS of the process) and the device
bytes the last report counts (its models' `device_bytes`); after each job it checks that
under LOW nothing stays on the device. Goals: RSS growth after the first 200 jobs ≤ 5 %;
under LOW the device bytes back at the baseline (0) after every job. On a GPU the same
figure is the CUDA allocator's, not measured here. Ctrl-C stops feeding jobs and prints
the figures of the jobs done so far. RSS swings by several per cent between samples
(allocator arenas, the models' working memory), so beside the last ÷ first growth it
prints the least-squares trend after the warm-up, in MB per 1,000 jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voicedrop.tiny.build import F5_VOICE, RVC_MODEL, XTTS_VOICE, build_tiny  # noqa: E402

BATCH = 20
WARMUP = 200


def jobs(n: int) -> list[dict[str, Any]]:
    """A repeating mix: each engine, each pitch method, texts of varying length."""
    out = []
    for i in range(n):
        text = " ".join(["Soak test sentence number", str(i), "of the long run."] * (1 + i % 3))
        kind = i % 6
        if kind == 0:
            manifest = {"text": text, "tts": {"engine": "espeak", "language": "en"}}
        elif kind == 1:
            manifest = {"text": text, "tts": {"engine": "xtts", "voice": XTTS_VOICE}}
        elif kind == 2:
            manifest = {"text": text, "tts": {"engine": "f5tts", "voice": F5_VOICE}}
        else:
            method = ("pm", "harvest", "rmvpe")[kind - 3]
            manifest = {
                "text": text,
                "tts": {"engine": "espeak", "language": "en"},
                "convert": {"engine": "rvc", "model": RVC_MODEL, "method": method},
            }
        out.append(manifest)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def device_bytes(report: dict[str, Any]) -> int:
    return sum(int(v.get("device_bytes", 0)) for v in (report.get("models") or {}).values())


def soak(policy: str, models: Path, n: int, every: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        (spool / "inbox" / ".incoming").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_"))}
        env |= {
            "VOICEDROP_CONFIG": str(models / "config.toml"),
            "VOICEDROP_SPOOL": str(spool),
            "VOICEDROP_DEVICE": "cpu",
            "VOICEDROP_LOG_LEVEL": "warning",
            "VOICEDROP_RESIDENCY__POLICY": policy,
            "HF_HUB_OFFLINE": "1",
        }
        log = (Path(tmp) / "daemon.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicedrop", "run"], env=env, stdout=log, stderr=log
        )
        rows: list[dict[str, Any]] = []
        left_on_device = []
        failed = 0
        started = time.monotonic()
        done = 0
        try:
            queue = jobs(n)
            while done < n:
                batch = queue[done : done + BATCH]
                for j, manifest in enumerate(batch):
                    name = f"s{done + j:05}"
                    staged = spool / "inbox" / ".incoming" / f"{name}.partial"
                    staged.write_text(json.dumps(manifest))
                    staged.rename(spool / "inbox" / f"{name}.json")
                for j in range(len(batch)):
                    name = f"s{done + j:05}"
                    report = wait_report(spool, name, proc)
                    if report["status"] == "failed":
                        failed += 1
                        if failed <= 3:
                            print(f"  {name} failed: {report['error']}", flush=True)
                    held = device_bytes(report)
                    if policy == "low" and held:
                        left_on_device.append((name, held))
                    count = done + j + 1
                    if count % every == 0:
                        row = {"jobs": count, "rss_mb": round(rss_mb(proc.pid), 1), "device": held}
                        rows.append(row)
                        print(
                            f"  {policy:6s} {count:5d} jobs  RSS {row['rss_mb']:7.1f} MB  "
                            f"device {held:>12,d} B  ({time.monotonic() - started:5.0f} s)",
                            flush=True,
                        )
                    shutil.rmtree(spool / "outbox" / name, ignore_errors=True)
                    shutil.rmtree(spool / "failed" / name, ignore_errors=True)
                done += len(batch)
        except KeyboardInterrupt:
            print(f"  {policy}: stopped after {done} jobs", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    after = [r for r in rows if r["jobs"] >= WARMUP]
    growth = (after[-1]["rss_mb"] / after[0]["rss_mb"] - 1) if len(after) > 1 else 0.0
    trend = (
        statistics.linear_regression([r["jobs"] for r in after], [r["rss_mb"] for r in after])
        if len(after) > 1
        else None
    )
    return {
        "policy": policy,
        "jobs": done,
        "stopped": done < n,
        "failed": failed,
        "rss_mb": rows,
        "rss_growth_after_warmup": round(growth, 4),
        "rss_trend_mb_per_1000_jobs": round(1000 * trend.slope, 1) if trend else None,
        "low_left_on_device": left_on_device[:10],
        "seconds": round(time.monotonic() - started, 1),
    }


def wait_report(spool: Path, name: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    while True:
        for folder in ("outbox", "failed"):
            path = spool / folder / name / "report.json"
            if path.exists():
                return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited ({proc.returncode}) before {name} was done")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--policies", default="low,normal")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        build_tiny(models, ["xtts", "f5tts", "rvc"], rmvpe=True)
        for policy in args.policies.split(","):
            print(f"{policy}: {args.jobs} jobs", flush=True)
            results.append(soak(policy, models, args.jobs, args.every))
            if results[-1]["stopped"]:
                break
    for r in results:
        print(
            f"{r['policy']:6s} {r['jobs']} jobs ({r['failed']} failed) in {r['seconds']:.0f} s: "
            f"RSS growth after {WARMUP} jobs {100 * r['rss_growth_after_warmup']:+.1f} % "
            f"(goal ≤ 5 %), trend "
            + (
                f"{r['rss_trend_mb_per_1000_jobs']:+.1f} MB per 1,000 jobs"
                if r["rss_trend_mb_per_1000_jobs"] is not None
                else f"unknown (fewer than two samples after job {WARMUP})"
            )
            + (
                f"; left on the device after a LOW job: {len(r['low_left_on_device'])} jobs"
                if r["policy"] == "low"
                else ""
            )
        )
    if args.json:
        print(json.dumps({r["policy"]: r for r in results}))


if __name__ == "__main__":
    main()
