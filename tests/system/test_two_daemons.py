"""Two daemons on one spool, as docker-compose.yml deploys them (one per GPU): each job is
leased by the daemon that claimed it, runs exactly once, and is taken over by the other
only once its owner is dead. Two daemons on one state directory: the second is refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stress
from tests.system.test_daemon import Daemon, drop, env_for

pytestmark = pytest.mark.system
JOBS = stress(200)


def test_two_daemons_on_one_spool_run_every_job_exactly_once(tmp_path: Path, figures):
    spool = tmp_path / "spool"
    a = Daemon(spool, log="a.log", VOICEDROP_STATE_DIR=str(tmp_path / "state-a"))
    b = Daemon(spool, log="b.log", VOICEDROP_STATE_DIR=str(tmp_path / "state-b"))
    try:
        for i in range(JOBS):
            drop(
                spool,
                f"j{i:06}",
                {"text": "x", "tts": {"engine": "noop", "options": {"work_s": 0.01}}},
            )
        outbox = spool / "outbox"
        a.wait_for(lambda: len(list(outbox.iterdir())) == JOBS, "all jobs", timeout=stress(120))
    finally:
        assert a.stop() == 0 and b.stop() == 0
    reports = [json.loads((d / "report.json").read_text()) for d in (spool / "outbox").iterdir()]
    assert sorted(r["job_id"] for r in reports) == [f"j{i:06}" for i in range(JOBS)]
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in reports)
    ran = {name: [e["job_id"] for e in d.events("job.start")] for name, d in (("a", a), ("b", b))}
    assert sorted(ran["a"] + ran["b"]) == [f"j{i:06}" for i in range(JOBS)], "a job ran twice"
    assert ran["a"] and ran["b"], "one daemon did all the work"
    assert list((spool / "work").iterdir()) == [] and list((spool / "failed").iterdir()) == []
    figures(jobs=JOBS, daemon_a=len(ran["a"]), daemon_b=len(ran["b"]))


def test_a_dead_daemons_job_is_taken_over_only_once_it_is_dead(tmp_path: Path):
    spool = tmp_path / "spool"
    quick = {"VOICEDROP_WATCHER__SCAN_INTERVAL_S": "0.5"}
    a = Daemon(spool, log="a.log", VOICEDROP_STATE_DIR=str(tmp_path / "state-a"))
    drop(spool, "long", {"text": "x", "tts": {"engine": "noop", "options": {"work_s": 30}}})
    a.wait_for(lambda: a.status().get("job_id") == "long", "a runs the long job")
    b = Daemon(spool, log="b.log", VOICEDROP_STATE_DIR=str(tmp_path / "state-b"), **quick)
    try:
        time.sleep(2)  # four of b's scans while a lives: b must leave the job alone
        assert b.events("job.start") == [] and b.events("executor.adopted") == []
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        b.wait_for(lambda: b.status().get("job_id") == "long", "b takes the orphan over", 10)
        assert [e["jobs"] for e in b.events("executor.adopted")] == [["long"]]
        started = b.events("job.start")
        assert [(e["job_id"], e["attempt"]) for e in started] == [("long", 2)]
    finally:
        a.log.close()
        assert b.stop(signal.SIGKILL) == -9


def test_a_second_daemon_on_the_same_state_directory_is_refused(tmp_path: Path):
    spool = tmp_path / "spool"
    first = Daemon(spool)
    try:
        for args in ((), ("--once",)):
            refused = subprocess.run(
                [sys.executable, "-m", "voicedrop", "run", *args],
                env=env_for(spool), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert refused.returncode == 4, refused.stderr
            assert f"another voicedrop daemon (pid {first.proc.pid})" in refused.stderr
            assert f"stop it first (kill {first.proc.pid}" in refused.stderr  # the usual case
            assert "needs its own state_dir" in refused.stderr
    finally:
        assert first.stop() == 0


def test_the_lock_dies_with_its_holder(tmp_path: Path):
    spool = tmp_path / "spool"
    first = Daemon(spool)
    first.stop(signal.SIGKILL)
    after = Daemon(spool)  # starts: no stale lock after a kill -9
    assert after.stop() == 0
