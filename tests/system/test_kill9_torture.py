"""kill -9 at random moments, commits included: every job ends with exactly one report.

50 rounds of: drop a few jobs, start a real daemon, kill -9 it after a random moment
(while it claims, runs, writes a report or renames a folder into the outbox). Then one
clean `run --once` finishes what is left. Nothing may be lost, doubled, half-written or
left behind in work/.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import stress
from tests.system.test_daemon import drop, env_for

pytestmark = pytest.mark.system
ROUNDS = stress(50)


def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path: Path, figures):
    rng = random.Random(20261127)
    spool = tmp_path / "spool"
    (spool / "inbox" / ".incoming").mkdir(parents=True)
    dropped, failing = [], 0
    for round_ in range(ROUNDS):
        for i in range(3):
            name = f"r{round_:03}-{i}"
            if rng.random() < 0.15:  # some jobs fail: their commit goes to failed/
                failing += 1
                manifest = {"text": "x", "tts": {"engine": "nope"}}
            else:
                work = round(rng.uniform(0.0, 0.05), 3)
                manifest = {"text": "x", "tts": {"engine": "noop", "options": {"work_s": work}}}
            drop(spool, name, manifest)
            dropped.append(name)
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicedrop", "run"],
            env=env_for(spool),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.2))  # start-up takes ~0.3 s: kill at any point after
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", "--once"],
        env=env_for(spool),
        capture_output=True,
        text=True,
        timeout=stress(300),
    )
    assert final.returncode == 0, final.stderr[-3000:]

    reports: dict[str, list[str]] = {}
    codes: Counter[str] = Counter()
    for folder in ("outbox", "failed"):
        for job in (spool / folder).iterdir():
            data = json.loads((job / "report.json").read_text())  # whole, valid JSON
            reports.setdefault(data["job_id"], []).append(folder)
            codes[data["error"]["code"] if data["error"] else data["status"]] += 1
            if folder == "outbox":
                for out in data["outputs"]:
                    info = sf.info(str(job / out["file"]))  # whole, readable audio
                    assert info.frames == round(out["duration_s"] * info.samplerate) or (
                        abs(info.frames / info.samplerate - out["duration_s"]) < 0.002
                    )
    assert sorted(reports) == sorted(dropped), "a job was lost or appeared from nowhere"
    assert all(len(places) == 1 for places in reports.values()), "a job was reported twice"
    assert list((spool / "work").iterdir()) == []
    assert codes["manifest_invalid"] == failing, codes  # only the jobs meant to fail failed
    figures(rounds=ROUNDS, jobs=len(dropped), **codes)
    assert not list(spool.rglob("*.tmp")), "a temp file was left behind"
    assert not list((spool / "inbox").glob("*.json"))
