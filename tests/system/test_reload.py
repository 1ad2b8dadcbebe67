"""SIGHUP (systemctl reload) re-reads the configuration between jobs: never inside one."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.system.test_daemon import ROOT, Daemon, drop

pytestmark = pytest.mark.system


def final(spool: Path, name: str) -> dict | None:
    for folder in ("outbox", "failed"):
        path = spool / folder / name / "report.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def test_sighup_applies_a_new_configuration_between_jobs(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text())
    spool = tmp_path / "spool"
    daemon = Daemon(spool, VOICEDROP_CONFIG=str(config))
    try:
        new_voice = {"text": "Hi.", "tts": {"engine": "espeak", "voice": "added"}}
        drop(spool, "before", new_voice)
        daemon.wait_for(lambda: final(spool, "before"), "the first job")
        assert final(spool, "before")["status"] == "failed"

        # a job is running when the signal comes: it finishes under the old configuration
        slow = {"text": "x", "tts": {"engine": "noop", "options": {"work_s": 1.0}}}
        drop(spool, "slow", slow)
        daemon.wait_for(lambda: daemon.status().get("job_id") == "slow", "the slow job")
        config.write_text(config.read_text() + '\n[voices.added]\nengine_voice = "en-gb"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: final(spool, "slow"), "the slow job to finish")
        assert final(spool, "slow")["status"] == "done" and final(spool, "slow")["attempt"] == 1
        daemon.wait_for(lambda: "service.reloaded" in daemon.logs(), "the reload")
        drop(spool, "after", new_voice)
        daemon.wait_for(lambda: final(spool, "after"), "the job after the reload")
        assert final(spool, "after")["status"] == "done"

        # an invalid configuration is refused: the daemon goes on as it was
        config.write_text(config.read_text().replace("rate = 165", "rate = 2000"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: "service.reload_refused" in daemon.logs(), "the refusal")
        assert "engines.espeak.rate = 2000" in daemon.logs()
        drop(spool, "still", new_voice)
        daemon.wait_for(lambda: final(spool, "still"), "a job after the refusal")
        assert final(spool, "still")["status"] == "done"
    finally:
        assert daemon.stop() == 0
