"""The device worker killed at random points (SIGKILL and SIGSEGV) under a queue of jobs:
every job ends exactly once and done, the daemon's pid never changes, and no job is
charged more than one attempt per kill.

`VOICEDROP_STRESS=10 pytest tests/system/test_worker_kills.py` makes 100 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import stress
from tests.system.test_daemon import Daemon

pytestmark = pytest.mark.system
KILLS = stress(10)


def worker_pid(daemon: Daemon) -> int | None:
    """The daemon's device worker, read from the kernel (never a reused pid of another)."""
    try:
        children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children").read_text()
    except OSError:
        return None
    for pid in map(int, children.split()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline:
            return pid
    return None


def test_kills_of_the_worker_lose_no_job_and_never_restart_the_daemon(tmp_path: Path, figures):
    rng = random.Random(20261207)
    spool = tmp_path / "spool"
    config = tmp_path / "voicedrop.toml"
    config.write_text(
        '[residency]\nworker = "process"\nworker_idle_s = 60\n'
        "[limits]\nretry_delay_s = 0.05\nmax_attempts = 50\n"
        "[engines.noop]\nwork_s = 0.4\n"
    )
    daemon = Daemon(spool, VOICEDROP_CONFIG=str(config))
    pid = daemon.proc.pid
    jobs = [f"j{i:03}" for i in range(KILLS * 2)]
    landed = 0
    try:
        incoming = spool / "inbox" / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        for name in jobs:
            (incoming / name).write_text(
                json.dumps({"text": f"Job {name}.", "tts": {"engine": "noop"}})
            )
            (incoming / name).rename(spool / "inbox" / f"{name}.json")
        deadline = time.monotonic() + 600
        while landed < KILLS and time.monotonic() < deadline:
            target = worker_pid(daemon)
            if target is None:
                time.sleep(0.01)
                continue
            time.sleep(rng.uniform(0.0, 0.6))  # at start-up, while ready, or mid-job
            try:
                os.kill(target, rng.choice([signal.SIGKILL, signal.SIGSEGV]))
                landed += 1
            except ProcessLookupError:
                continue
            while worker_pid(daemon) == target:
                time.sleep(0.005)
        done = lambda: all((spool / "outbox" / n / "report.json").exists() for n in jobs)  # noqa: E731
        daemon.wait_for(done, "every job's report", timeout=600)
    finally:
        assert daemon.stop() == 0
    assert daemon.proc.pid == pid  # one daemon throughout: it never died
    lost = 0
    for name in jobs:
        assert (
            not (spool / "failed" / name).exists() and not (spool / "outbox" / f"{name}-2").exists()
        )
        report = json.loads((spool / "outbox" / name / "report.json").read_text())
        codes = [e["code"] for e in report["previous_errors"]]
        assert set(codes) <= {"worker_lost"}, codes
        assert report["attempt"] == len(codes) + 1  # an attempt is charged only for a kill
        lost += len(codes)
    assert lost <= landed  # no kill charged to more than one job attempt
    assert list((spool / "work").iterdir()) == []
    figures(kills=landed, jobs=len(jobs), attempts_lost=lost)
