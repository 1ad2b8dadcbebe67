"""Scale-out: the same queue on 1, 2 and 4 Ray actors of a local cluster.

    python benchmarks/scaleout.py [--jobs 48] [--work-s 0.4] [--actors 1,2,4] [--json]

Each set-up is a real daemon (`voicedrop run --once --ray local`) on its own spool, with a
private Ray cluster of N fake GPUs (this machine has none, and 2 cores): each job's TTS is
the `noop` engine spending `--work-s` seconds as a GPU would (waiting, not burning CPU),
then the real offline `tape` conversion with one of six voice models (six residency keys).
Throughput is jobs ÷ (last job's end - first job's start), from the reports, so the
cluster's start-up is not counted. Printed per set-up: jobs per second, the scaling
efficiency throughput(N) ÷ (N x throughput(1)), and the voice models loaded (actor,
model pairs) with routing by resident model and, for the largest N, with round-robin.
`--json` prints one JSON object on the last line; `efficiency` is the largest N's.

What the figures mean: a job's "work" here is a wait, not compute, so N actors on a
2-core machine overlap perfectly and an efficiency near 1 is expected — it checks that
the head's dispatch does not serialise the workers, not that GPUs scale. The result that
matters is routing: the voice models loaded with routing by resident model against
round-robin (each load is seconds of a real GPU's time). Goals: efficiency >= 0.9 at
N = 4, and fewer loads than round-robin.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VOICES = ("v1", "v2", "v3", "v4", "v5", "v6")


def setup(root: Path, actors: int, routing: str, jobs: int, work_s: float) -> Path:
    spool = root / "spool"
    (spool / "inbox").mkdir(parents=True)
    lines = [
        f'spool = "{spool}"',
        'device = "cpu"',
        'log_level = "warning"',
        "[watcher]",
        "stable_delay_s = 0.0",
        *(f'[models.{v}]\nengine = "tape"' for v in VOICES),
        "[ray]",
        'address = "local"',
        f"local_gpus = {actors}",
        f"actors = {actors}",
        f'routing = "{routing}"',
    ]
    (root / "config.toml").write_text("\n".join(lines) + "\n")
    for i in range(jobs):
        manifest = {
            "text": f"job {i}",
            "tts": {"engine": "noop", "options": {"work_s": work_s}},
            "convert": {"engine": "tape", "model": VOICES[i % len(VOICES)]},
        }
        (spool / "inbox" / f"j{i:03d}.json").write_text(json.dumps(manifest))
    return root / "config.toml"


def run(actors: int, routing: str, jobs: int, work_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"voicedrop-scale-{actors}-"))
    try:
        cfg = setup(root, actors, routing, jobs, work_s)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEDROP_")}
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        done = subprocess.run(
            [sys.executable, "-m", "voicedrop", "--config", str(cfg), "run", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{actors} actors: the daemon failed:\n{done.stderr[-3000:]}")
        reports = [json.loads(p.read_text()) for p in (root / "spool").glob("*/*/report.json")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if len(reports) != jobs or any(r["status"] != "done" for r in reports):
        raise RuntimeError(f"{actors} actors: {len(reports)} reports for {jobs} jobs")
    start = min(datetime.fromisoformat(r["timings"]["started_at"]) for r in reports)
    end = max(datetime.fromisoformat(r["timings"]["finished_at"]) for r in reports)
    seconds = (end - start).total_seconds()
    loads = {
        (r["worker"]["actor"], e["key"])
        for r in reports
        for e in r["events"]
        if e["event"] in ("load", "prefetch") and e["key"].startswith("tape:")
    }
    return {
        "actors": actors,
        "routing": routing,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(jobs / seconds, 3),
        "voice_loads": len(loads),
        "per_actor": {
            a: sum(1 for r in reports if r["worker"]["actor"] == a)
            for a in sorted({r["worker"]["actor"] for r in reports})
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--work-s", type=float, default=0.4, help="device time per job")
    parser.add_argument("--actors", default="1,2,4", help="comma-separated")
    parser.add_argument("--json", action="store_true", help="also one JSON object, last line")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.actors.split(",")]
    results = []
    for n in counts:
        print(f"{n} actor(s), routing by resident model …", file=sys.stderr)
        results.append(run(n, "resident", args.jobs, args.work_s))
    largest = max(counts)
    print(f"{largest} actors, round-robin …", file=sys.stderr)
    robin = run(largest, "round-robin", args.jobs, args.work_s)
    one = next((r["jobs_per_s"] for r in results if r["actors"] == 1), None)
    for r in results:
        r["efficiency"] = round(r["jobs_per_s"] / (r["actors"] * one), 3) if one else None
    summary = {
        "jobs": args.jobs,
        "work_s": args.work_s,
        "setups": results,
        "round_robin": robin,
        "efficiency": next(r["efficiency"] for r in results if r["actors"] == largest),
        "voice_loads": next(r["voice_loads"] for r in results if r["actors"] == largest),
        "voice_loads_round_robin": robin["voice_loads"],
        "machine": f"{os.cpu_count()}-core CPU, fake GPUs (Ray num_gpus)",
    }
    print(
        f"scale-out, {args.jobs} jobs of {args.work_s:g} s device time + tape conversion "
        f"(6 voices), local Ray cluster, {summary['machine']}, {time.strftime('%Y-%m-%d')}\n"
        "the jobs' work is a wait, so efficiency near 1 is expected (the dispatch does not "
        "serialise the workers); the result that matters is the voice loads against "
        "round-robin"
    )
    print("| actors | routing | jobs/s | efficiency | voice loads | jobs per actor |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in [*results, robin]:
        eff = "-" if r.get("efficiency") is None else f"{r['efficiency']:.3f}"
        print(
            f"| {r['actors']} | {r['routing']} | {r['jobs_per_s']:.2f} | {eff} | "
            f"{r['voice_loads']} | {r['per_actor']} |"
        )
    print(
        f"routing by resident model: {summary['voice_loads']} voice loads at {largest} actors "
        f"against {summary['voice_loads_round_robin']} round-robin (efficiency "
        f"{summary['efficiency']}: waits, not compute)"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
