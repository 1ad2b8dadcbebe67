"""A real daemon with its device worker process: the job runs in the worker, `status`
shows it, and once idle the worker exits and the daemon lives on, its pid unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.system.test_daemon import Daemon, voicedrop

pytestmark = pytest.mark.system


def test_the_worker_runs_the_job_shows_in_status_and_exits_when_idle(tmp_path: Path):
    spool = tmp_path / "spool"
    env = {"VOICEDROP_RESIDENCY__WORKER": "process", "VOICEDROP_RESIDENCY__WORKER_IDLE_S": "2"}
    daemon = Daemon(spool, **env)
    try:
        staged = spool / "inbox" / ".incoming" / "hi.partial"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(json.dumps({"text": "Hello there.", "tts": {"engine": "espeak"}}))
        staged.rename(spool / "inbox" / "hi.json")
        report = spool / "outbox" / "hi" / "report.json"
        daemon.wait_for(report.exists, "the job's report", timeout=120)
        ran_on = json.loads(report.read_text())["worker"]
        assert ran_on is not None and ran_on["device"] == "cpu"
        daemon.wait_for(lambda: daemon.status().get("workers"), "the worker in status.json")
        [worker] = daemon.status()["workers"]
        shown = voicedrop("status", spool=spool, **env).stdout
        if worker["state"] == "ready":  # it may have exited already on a slow machine
            assert worker["pid"] not in (None, daemon.proc.pid)
            assert "device worker process: ready" in shown, shown
        gone = lambda: daemon.status().get("workers", [{}])[0].get("state") == "none"  # noqa: E731
        daemon.wait_for(gone, "the idle worker's exit", timeout=60)
        assert "device worker process: none" in voicedrop("status", spool=spool, **env).stdout
        assert daemon.proc.poll() is None and daemon.status()["pid"] == daemon.proc.pid
        if worker["pid"]:
            assert not os.path.exists(f"/proc/{worker['pid']}/status") or _zombie(worker["pid"])
    finally:
        assert daemon.stop() == 0


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        return any(line.startswith("State:") and "Z" in line for line in fh)


def test_the_openai_client_streams_speech_made_on_the_worker(tmp_path: Path):
    """The worker sends its audio as it is made; the daemon appends it to the job's stream,
    which the speech endpoint follows: the same bytes a client gets in-process."""
    import openai

    from tests.system.test_http import TOKEN, Server
    from tests.system.test_speech_api import TEXT, seconds_of

    srv = Server(tmp_path / "spool", VOICEDROP_RESIDENCY__WORKER="process")
    try:
        api = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=TOKEN)
        with api.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
        ) as response:
            job_id = response.headers["x-job-id"]
            data = b"".join(response.iter_bytes())
        report = srv.http.get(f"/jobs/{job_id}").json()["report"]
        health = srv.http.get("/health").json()
    finally:
        assert srv.stop() == 0
    assert report["status"] == "done" and report["worker"] is not None
    assert seconds_of("pcm", data) == pytest.approx(report["outputs"][0]["duration_s"], abs=0.1)
    assert health["worker"]["state"] in ("ready", "busy") and health["worker"]["pid"]


def test_the_worker_starts_with_the_daemon_so_the_first_job_pays_no_start(tmp_path: Path):
    """At start the daemon says it is warming until its worker is ready (its imports done);
    the first job then runs on that worker: no start of its own (1.2 s of a 25 ms request)."""
    spool = tmp_path / "spool"
    env = {"VOICEDROP_RESIDENCY__WORKER": "process", "VOICEDROP_RESIDENCY__WORKER_IDLE_S": "120"}
    daemon = Daemon(spool, **env)
    try:
        worker = lambda: (daemon.status().get("workers") or [{}])[0]  # noqa: E731
        warm = lambda: worker().get("state") == "ready" and not daemon.status()["warming"]  # noqa: E731
        daemon.wait_for(warm, "the worker ready before any job", timeout=120)
        started = worker()
        assert started["pid"] not in (None, daemon.proc.pid) and started["starts"] == 1
        outbox = spool / "outbox"  # its warm-up (a word from espeak) left nothing in the spool
        ledger = spool / ".ledger.jsonl"
        assert not any(outbox.iterdir()) and not (ledger.exists() and ledger.read_text().strip())
        staged = spool / "inbox" / ".incoming" / "first.partial"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(json.dumps({"text": "The first job.", "tts": {"engine": "espeak"}}))
        staged.rename(spool / "inbox" / "first.json")
        daemon.wait_for((spool / "outbox" / "first" / "report.json").exists, "the job", 120)
        daemon.wait_for(lambda: worker().get("state") == "ready", "the worker idle again")
        assert worker()["pid"] == started["pid"] and worker()["starts"] == 1
    finally:
        assert daemon.stop() == 0
