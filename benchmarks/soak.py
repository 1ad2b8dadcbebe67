"""Soak: thousands of jobs through one real daemon, watching for memory that creeps.

    python benchmarks/soak.py [--jobs 2000] [--policies low,normal] [--kinds ...]
                              [--warmup 200] [--every 100] [--json]

Memory creep over many generations is the failure long-running TTS servers are known for
(a cache that grows, tensors a demote leaves behind). One `voicedrop run` process per
policy gets `--jobs` jobs, fed in batches: espeak, XTTS, F5-TTS and RVC conversions (pm,
harvest and rmvpe) mixed (`--kinds` picks some), all on the tiny models
(`voicedrop.tiny`), on the CPU device. After every job it samples the daemon's memory:
VmRSS, and the anonymous part (RssAnon), whose floor over a window is what the process
keeps for itself once the models' working memory is freed (file-backed pages are the
mapped weights and libraries, which the kernel may drop at will). Every `--every` jobs
it prints the window's median VmRSS, its anonymous floor, the device bytes the last
report counts (its models' `device_bytes`) and the window's mean seconds of audio per job
(the same mix throughout, so a flat line); after each job it checks that under LOW
nothing stays on the device.

Goals: growth after the first `--warmup` jobs ≤ 5 %; under LOW the device bytes back at
the baseline (0) after every job. On a GPU the device figure is the CUDA allocator's, not
measured here. One VmRSS sample swings by up to 20 % with whichever model a LOW daemon
has mapped at that moment, so a window's figure is its median; beside the last ÷ first
growth it prints the least-squares trend after the warm-up, in MB per 1,000 jobs, for
the median VmRSS and for the anonymous floor.
A creep this benchmark found under LOW was oneDNN's kernel cache (one compiled
convolution per input shape, every job a new length), now capped by
`voicedrop.pipeline.device_choice.cap_kernel_cache`. Ctrl-C stops feeding jobs and
prints the figures of the jobs done so far.
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


KINDS = ("espeak", "xtts", "f5tts", "pm", "harvest", "rmvpe")


def jobs(n: int, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """A repeating mix: each engine, each pitch method, texts of varying length (`kinds`:
    only these of the six, to find which one a creep comes with).

    The mix is stationary: job 1,900 is drawn from the same lengths as job 300, so that
    memory that grows is the daemon's and not the work's. (A text that said the job's
    own number grew by two spoken words from job 100 to job 1,000, and the audio with
    it.) Lengths still differ from job to job, as users' do: the sentence's number comes
    from a fixed set of 900 three-digit numbers in a scrambled order, and each engine
    gets one, two and three sentences in turn."""
    out = []
    chosen = [KINDS.index(k) for k in kinds]
    for i in range(n):
        number = 100 + (i * 7919) % 900
        sentences = 1 + (i // len(chosen)) % 3
        text = " ".join(["Soak test sentence number", str(number), "of the long run."] * sentences)
        kind = chosen[i % len(chosen)]
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


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, and its anonymous part: RssAnon is what a leak or the heap's fragmentation
    grows; RssFile is the checkpoints' mapped pages (page cache, given back under pressure)
    and swings with whichever model a LOW daemon has mapped at that moment."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def device_bytes(report: dict[str, Any]) -> int:
    return sum(int(v.get("device_bytes", 0)) for v in (report.get("models") or {}).values())


def soak(
    policy: str,
    models: Path,
    n: int,
    every: int,
    kinds: tuple[str, ...] = KINDS,
    warmup: int = 200,
) -> dict[str, Any]:
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
        floor = float("inf")  # the least anonymous memory seen after a job, this window
        window: list[float] = []  # VmRSS after each job, this window
        audio_s = 0.0  # seconds of audio made, this window: the work must not drift
        try:
            queue = jobs(n, kinds)
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
                    audio_s += sum(float(o["duration_s"]) for o in report.get("outputs") or [])
                    if policy == "low" and held:
                        left_on_device.append((name, held))
                    count = done + j + 1
                    memory = memory_mb(proc.pid)
                    floor = min(floor, memory["RssAnon"])
                    window.append(memory["VmRSS"])
                    if count % every == 0:
                        row = {
                            "jobs": count,
                            "rss_mb": round(statistics.median(window), 1),
                            "anon_floor_mb": round(floor, 1),
                            "device": held,
                            "audio_s_per_job": round(audio_s / every, 2),
                        }
                        rows.append(row)
                        floor = float("inf")
                        window = []
                        audio_s = 0.0
                        print(
                            f"  {policy:6s} {count:5d} jobs  RSS (median) {row['rss_mb']:7.1f} MB  "
                            f"anonymous floor {row['anon_floor_mb']:7.1f} MB  "
                            f"device {held:>12,d} B  audio {row['audio_s_per_job']:5.2f} s/job  "
                            f"({time.monotonic() - started:5.0f} s)",
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
    # rows whose whole window follows the warm-up: the row at job `warmup` has a floor
    # taken over the start, before the models were ever loaded
    after = [r for r in rows if r["jobs"] > warmup]
    return {
        "policy": policy,
        "jobs": done,
        "stopped": done < n,
        "failed": failed,
        "kinds": list(kinds),
        "warmup": warmup,
        "rss_mb": rows,
        **{f"rss_{k}": v for k, v in growth(after, "rss_mb").items()},
        **{f"anon_floor_{k}": v for k, v in growth(after, "anon_floor_mb").items()},
        "low_left_on_device": left_on_device[:10],
        "seconds": round(time.monotonic() - started, 1),
    }


def growth(after: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Last ÷ first after the warm-up, and the least-squares trend in MB per 1,000 jobs."""
    if len(after) < 2:
        return {"growth_after_warmup": None, "trend_mb_per_1000_jobs": None}
    xs, ys = [r["jobs"] for r in after], [r[key] for r in after]
    return {
        "growth_after_warmup": round(ys[-1] / ys[0] - 1, 4),
        "trend_mb_per_1000_jobs": round(1000 * statistics.linear_regression(xs, ys).slope, 1),
    }


def described(figures: dict[str, Any], prefix: str) -> str:
    change, trend = (
        figures[f"{prefix}growth_after_warmup"],
        figures[f"{prefix}trend_mb_per_1000_jobs"],
    )
    if change is None:
        return f"unknown (fewer than two samples after job {figures['warmup']})"
    return f"{100 * change:+.1f} % (trend {trend:+.1f} MB per 1,000 jobs)"


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
    parser.add_argument("--kinds", default=",".join(KINDS), help="of " + ",".join(KINDS))
    parser.add_argument("--warmup", type=int, default=200, help="jobs before growth counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    if not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: of {', '.join(KINDS)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        build_tiny(models, ["xtts", "f5tts", "rvc"], rmvpe=True)
        for policy in args.policies.split(","):
            print(f"{policy}: {args.jobs} jobs", flush=True)
            results.append(soak(policy, models, args.jobs, args.every, kinds, args.warmup))
            if results[-1]["stopped"]:
                break
    for r in results:
        print(
            f"{r['policy']:6s} {r['jobs']} jobs ({r['failed']} failed) in {r['seconds']:.0f} s, "
            f"after job {r['warmup']}: RSS {described(r, 'rss_')}; anonymous memory's floor "
            f"{described(r, 'anon_floor_')} (goal ≤ 5 %)"
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
