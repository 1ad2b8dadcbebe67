"""kill -9 at random moments, commits included: every job ends with exactly one report.

50 rounds of: drop a few jobs, start a real daemon, kill -9 it after a random moment
(while it claims, runs, writes a report or renames a folder into the outbox). Then one
clean `run --once` finishes what is left. Nothing may be lost, doubled, half-written or
left behind in work/.
"""

from __future__ import annotations

import json
import os
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
from tests.system.test_daemon import Daemon, drop, env_for

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


CRASH_ON = """
import os, signal, sys
from voicedrop.pipeline.engines import offline
real = offline.NoopEngine.stream
def stream(self, models, text, request, progress):
    if text == {text!r}:  # as a buggy C library would, on this input
        os.kill(os.getpid(), signal.SIGSEGV)
    return real(self, models, text, request, progress)
offline.NoopEngine.stream = stream
"""
CRASHING_DAEMON = (
    CRASH_ON.format(text="this job crashes the daemon")
    + """
from voicedrop.cli import main
sys.exit(main(["run", "--once"]))
"""
)


def test_a_job_that_crashes_the_daemon_is_failed_after_max_attempts_with_the_evidence(
    tmp_path: Path,
):
    spool = tmp_path / "spool"
    (spool / "inbox" / ".incoming").mkdir(parents=True)
    drop(spool, "poison", {"text": "this job crashes the daemon", "tts": {"engine": "noop"}})
    time.sleep(0.01)  # the poison is older: it is first in line at every start
    drop(spool, "good", {"text": "x", "tts": {"engine": "noop"}})
    codes = []
    for _ in range(6):  # at most max_attempts (3) crashes, then the run that fails it
        run = subprocess.run(
            [sys.executable, "-c", CRASHING_DAEMON],
            env=env_for(spool, VOICEDROP_RESIDENCY__WORKER="inline"),  # the daemon computes
            capture_output=True,
            text=True,
            timeout=120,
        )
        codes.append(run.returncode)
        if run.returncode == 0:
            break
    assert codes == [-signal.SIGSEGV] * 3 + [0], codes
    report = json.loads((spool / "failed" / "poison" / "report.json").read_text())
    assert report["error"]["code"] == "too_many_attempts"
    assert "brought the daemon down 3 times" in report["error"]["message"]
    deaths = [e["message"] for e in report["previous_errors"]]
    assert len(deaths) == 3 and all("Segmentation fault" in d for d in deaths), deaths
    assert json.loads((spool / "outbox" / "good" / "report.json").read_text())["status"] == "done"


CRASHING_WORKER = CRASH_ON.format(text="this job crashes its worker")  # in every process


def test_a_job_that_crashes_its_worker_each_time_is_failed_saying_so_and_the_daemon_goes_on(
    tmp_path: Path,
):
    """With the device worker (the default), a job whose input crashes the library fails
    attempts, not the daemon: one daemon process throughout, a fresh worker per attempt,
    and after max_attempts the job is failed with each death in its report."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(CRASHING_WORKER)  # every process
    spool = tmp_path / "spool"
    (spool / "inbox" / ".incoming").mkdir(parents=True)
    drop(spool, "poison", {"text": "this job crashes its worker", "tts": {"engine": "noop"}})
    time.sleep(0.01)
    drop(spool, "good", {"text": "x", "tts": {"engine": "noop"}})
    env = env_for(spool, VOICEDROP_LIMITS__RETRY_DELAY_S="0")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "inject"), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]  # the daemon itself never went down
    report = json.loads((spool / "failed" / "poison" / "report.json").read_text())
    assert report["error"]["code"] == "too_many_attempts" and report["attempt"] == 3
    assert "ended its device worker 3 times" in report["error"]["message"]
    assert "SIGSEGV" in report["error"]["message"]
    assert [e["code"] for e in report["previous_errors"]] == ["worker_lost"] * 2
    assert json.loads((spool / "outbox" / "good" / "report.json").read_text())["status"] == "done"


def test_a_job_killed_from_outside_more_than_max_attempts_times_is_not_blamed(tmp_path: Path):
    """kill -9 (and systemd's SIGKILL after a stop timeout) while it runs, five times: the
    evidence says each came from outside, so the job runs to the end when let."""
    spool = tmp_path / "spool"
    (spool / "inbox" / ".incoming").mkdir(parents=True)
    drop(spool, "unlucky", {"text": "x", "tts": {"engine": "noop", "options": {"work_s": 300}}})
    running = spool / "work" / "unlucky" / ".running"
    for i in range(5):
        daemon = Daemon(spool, log=f"daemon-{i}.log")

        def this_attempt_runs(pid: int = daemon.proc.pid) -> bool:
            # the last attempt's marker stays until this daemon takes the job back
            try:
                return json.loads(running.read_text())["pid"] == pid
            except (OSError, ValueError):
                return False

        daemon.wait_for(this_attempt_runs, "this daemon's attempt under way")
        if i == 2:  # once as systemd does it: a stop first, the kill at its timeout
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.wait_for((running.parent / ".stopping").exists, "the stop noted")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=30)
        daemon.log.close()
    manifest = spool / "work" / "unlucky" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tts"]["options"]["work_s"] = 0.0  # let it end this time
    manifest.write_text(json.dumps(data))
    final = subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", "--once"],
        env=env_for(spool),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads((spool / "outbox" / "unlucky" / "report.json").read_text())
    assert report["status"] == "done" and report["attempt"] == 6
    causes = [e["message"].split(":")[0] for e in report["previous_errors"]]
    assert causes == ["killed", "killed", "stopped", "killed", "killed"], causes
