"""The daemon's own cost, this work tree against a named commit, side by side.

    .venv/bin/python benchmarks/compare.py BASE [--rounds 3] [--jobs 400] [--json]

Checks BASE out into a temporary git worktree and runs the same measurements on it and
on this work tree, interleaved (head then base, then base then head, ...), each a fresh
`voicedrop` process of that tree on the same venv:

- tiny jobs per second: `--jobs` one-word noop manifests dropped before `run --once`,
  from the first job's start to the last one's end (its JSON log);
- a fresh `run --http` daemon: its RSS once ready and warm; its first request (a short
  sentence) against the median of the next three; the first audio of a 40-sentence
  `/v1/audio/speech` pcm request and the whole response (median of three, each text
  ending with a sentence of its own, so the clip cache answers none).

It prints each round and the medians, and head ÷ base: a regression is seen the day it
lands. On a shared machine single runs swing: compare the medians, and the rounds.
"""

# ruff: noqa: E402 (the imports come after the path fix below)
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repository, not benchmarks/ (whose speech_api shadows nothing)

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime
from typing import Any

TEXT = " ".join(f"This is sentence number {i} of a long passage read aloud." for i in range(1, 41))
FIGURES = ("jobs_per_s", "idle_rss_mb", "first_request_ms", "warm_request_ms", "first_audio_ms",
           "whole_ms")  # fmt: skip
HIGHER_IS_BETTER = {"jobs_per_s"}


def env_of(tree: Path, spool: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_VRAM"))}
    return env | {
        "PYTHONPATH": str(tree),
        "VOICEDROP_CONFIG": str(tree / "config.toml"),
        "VOICEDROP_SPOOL": str(spool),
        "VOICEDROP_DEVICE": "cpu",
        "VOICEDROP_LOG_FORMAT": "json",
        "HF_HUB_OFFLINE": "1",
    }


def drop(inbox: Path, name: str, manifest: dict[str, Any]) -> None:
    staged = inbox / ".incoming" / f"{name}.partial"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(json.dumps(manifest))
    staged.rename(inbox / f"{name}.json")


def jobs_per_s(tree: Path, work: Path, jobs: int) -> float:
    spool = work / "jobs"
    for i in range(jobs):
        drop(spool / "inbox", f"j{i:05}", {"text": "word", "tts": {"engine": "noop"}})
    log = work / "jobs.log"
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-m", "voicedrop", "run", "--once"], cwd=tree,
                       env=env_of(tree, spool), stdout=out, stderr=subprocess.STDOUT,
                       timeout=900, check=True)  # fmt: skip
    stamps = []
    for line in log.read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") in ("job.start", "job.end", "job.started", "job.finished"):
            stamps.append(datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")))
    done = len(list((spool / "outbox").glob("*/report.json")))
    return done / (max(stamps) - min(stamps)).total_seconds()


def speak(url: str, text: str) -> tuple[float, float]:
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"})
    request = urllib.request.Request(url + "/v1/audio/speech", data=body.encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    started, first = time.perf_counter(), None
    with urllib.request.urlopen(request, timeout=300) as response:
        while response.read1(65536):
            first = first or time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def http_figures(tree: Path, work: Path) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spool = work / "http"
    command = [sys.executable, "-m", "voicedrop", "run", "--http", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(command, cwd=tree, env=env_of(tree, spool),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    health = json.loads(r.read())
                if health.get("ready") and not health.get("warming"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{tree}: the daemon did not become ready")
            time.sleep(0.05)
        with open(f"/proc/{proc.pid}/status") as fh:
            rss = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) / 1024
        first = speak(url, "The first request after the start.")[1]
        warm = statistics.median(speak(url, f"A warm request, number {i}.")[1] for i in range(3))
        long = [speak(url, f"{TEXT} This is take {i}.") for i in range(3)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "idle_rss_mb": rss,
        "first_request_ms": first * 1000,
        "warm_request_ms": warm * 1000,
        "first_audio_ms": statistics.median(r[0] for r in long) * 1000,
        "whole_ms": statistics.median(r[1] for r in long) * 1000,
    }


def measure(tree: Path, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="voicedrop-compare-") as tmp:
        return {"jobs_per_s": jobs_per_s(tree, Path(tmp), jobs), **http_figures(tree, Path(tmp))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="a commit: what this work tree is compared with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    base_tree = Path(tempfile.mkdtemp(prefix="voicedrop-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    try:
        base = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=base_tree, text=True,
                              capture_output=True, check=True).stdout.strip()  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {"head": [], "base": []}
        for n in range(args.rounds):
            order = [("head", ROOT), ("base", base_tree)]
            for name, tree in order if n % 2 == 0 else order[::-1]:
                runs[name].append(measure(tree, args.jobs))
                if not args.json:
                    shown = "  ".join(f"{k} {v:.1f}" for k, v in runs[name][-1].items())
                    print(f"round {n + 1} {name:4s} {shown}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT,
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(base_tree, ignore_errors=True)
    medians = {
        name: {k: statistics.median(r[k] for r in rs) for k in FIGURES} for name, rs in runs.items()
    }
    ratio = {k: medians["head"][k] / medians["base"][k] for k in FIGURES}
    if args.json:
        print(json.dumps({"head": head, "base": base, "rounds": runs, "medians": medians,
                          "head_over_base": ratio}))  # fmt: skip
        return
    print(
        f"\nmedians of {args.rounds} interleaved rounds: head {head} (this work tree), base {base}"
    )
    for k in FIGURES:
        better = "higher is better" if k in HIGHER_IS_BETTER else "lower is better"
        print(f"  {k:18s} head {medians['head'][k]:9.1f}  base {medians['base'][k]:9.1f}  "
              f"head/base {ratio[k]:.2f} ({better})")  # fmt: skip


if __name__ == "__main__":
    main()
