"""One daemon per spool: a second one is refused while the first lives, and may start once
the first is gone — even when it died by kill -9 (the kernel drops an flock with its holder)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import stress
from tests.system.test_daemon import Daemon, env_for

pytestmark = pytest.mark.system
JOBS = stress(200)


def second(spool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", *args],
        env=env_for(spool),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_daemon_is_refused_and_every_job_runs_exactly_once(tmp_path: Path, figures):
    spool = tmp_path / "spool"
    first = Daemon(spool)
    try:
        for i in range(JOBS):
            job = {"text": "x", "tts": {"engine": "noop", "options": {"work_s": 0.01}}}
            tmp = spool / "inbox" / ".incoming" / f"j{i:06}.partial"
            tmp.write_text(json.dumps(job))
            tmp.rename(spool / "inbox" / f"j{i:06}.json")
        first.wait_for(lambda: first.status().get("state") == "running", "a running job")
        for args in ((), ("--once",)):
            refused = second(spool, *args)
            assert refused.returncode == 4, refused.stderr
            assert f"another voicedrop daemon (pid {first.proc.pid})" in refused.stderr
            assert "one daemon per spool" in refused.stderr
        outbox = spool / "outbox"
        first.wait_for(lambda: len(list(outbox.iterdir())) == JOBS, "all jobs", timeout=stress(120))
    finally:
        assert first.stop() == 0
    reports = [json.loads((d / "report.json").read_text()) for d in (spool / "outbox").iterdir()]
    assert sorted(r["job_id"] for r in reports) == [f"j{i:06}" for i in range(JOBS)]
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in reports)
    assert list((spool / "work").iterdir()) == []
    assert list((spool / "failed").iterdir()) == []
    figures(jobs=JOBS, second_daemon_refused=2)


def test_the_lock_dies_with_its_holder(tmp_path: Path):
    spool = tmp_path / "spool"
    first = Daemon(spool)
    first.stop(signal.SIGKILL)
    after = Daemon(spool)  # starts: no stale lock after a kill -9
    assert after.stop() == 0
