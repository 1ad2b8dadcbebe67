"""System tests: a real `voicedrop run` process on a real directory with a real observer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import VRAM_KEYS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "sample_inbox").glob("*.json"))
pytestmark = pytest.mark.system


def env_for(spool: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_VRAM"))}
    env.update(
        {
            "VOICEDROP_CONFIG": str(ROOT / "config.toml"),
            "VOICEDROP_SPOOL": str(spool),
            "VOICEDROP_LOG_FORMAT": "json",
            "VOICEDROP_DEVICE": "cpu",
            **extra,
        }
    )
    return env


def voicedrop(*args: str, spool: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicedrop", *args],
        env=env_for(spool, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Daemon:
    def __init__(self, spool: Path, *, log: str = "daemon.log", **extra: str) -> None:
        self.spool = spool
        self.state = Path(extra.get("VOICEDROP_STATE_DIR", spool / "state"))
        self.log_path = spool.parent / log
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voicedrop", "run"],
            env=env_for(spool, **extra),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        ready = ("idle", "running")  # running: it went straight to a job it recovered
        self.wait_for(lambda: self.status().get("state") in ready, "daemon ready")

    def status(self) -> dict:
        try:
            data = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if data.get("pid") == self.proc.pid else {}

    def wait_for(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.proc.poll() is None or what == "exit", f"daemon died: {self.logs()}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text()[-4000:]

    def events(self, name: str) -> list[dict]:
        """The JSON log lines of one event."""
        lines = self.log_path.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("event") == name]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self.log.close()
        return rc


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def drop(spool: Path, name: str, manifest: dict) -> None:
    """Drop a manifest as a careful producer does: written aside, then renamed in."""
    tmp = spool / "inbox" / ".incoming" / f"{name}.partial"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(manifest))
    tmp.rename(spool / "inbox" / f"{name}.json")


def done(spool: Path, job: str) -> bool:
    return (spool / "outbox" / job / "report.json").exists()


def report(spool: Path, folder: str, job: str) -> dict:
    return json.loads((spool / folder / job / "report.json").read_text())


def check_sample_results(spool: Path) -> None:
    good = ["flac-48k-loud", "hello-en", "ola-pt", "two-segments"]
    assert sorted(p.name for p in (spool / "outbox").iterdir()) == good
    for job in good:
        data = report(spool, "outbox", job)
        assert data["status"] == "done"
        for out in data["outputs"]:
            audio, rate = sf.read(spool / "outbox" / job / out["file"])
            assert rate == out["sample_rate"] and len(audio) / rate > 0.5
    loud = report(spool, "outbox", "flac-48k-loud")["outputs"][0]
    assert loud["format"] == "flac" and loud["sample_rate"] == 48000
    assert abs(loud["loudness_lufs"] - -16) < 1
    bad = report(spool, "failed", "bad-unknown-voice")
    assert (
        bad["error"]["field"] == "tts.voice" and "unknown espeak voice" in bad["error"]["message"]
    )
    assert list((spool / "work").iterdir()) == []


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_sample_manifests_dropped_into_a_running_daemon(spool, mode):
    daemon = Daemon(
        spool,
        VOICEDROP_WATCHER__MODE=mode,
        VOICEDROP_WATCHER__POLL_INTERVAL_S="0.2",
        VOICEDROP_WATCHER__SCAN_INTERVAL_S="600",
    )
    try:
        assert daemon.status()["watcher"] == mode
        for sample in SAMPLES:
            shutil.copy(sample, spool / "inbox" / sample.name)
        daemon.wait_for(
            lambda: (
                len(list((spool / "outbox").iterdir())) == 4
                and len(list((spool / "failed").iterdir())) == 1
            ),
            "all samples",
        )
    finally:
        assert daemon.stop() == 0
    check_sample_results(spool)


def test_a_manifest_written_slowly_is_not_taken_before_it_is_complete(spool):
    # the close completes it; a delay far beyond the writer's pauses, so that a busy
    # machine stretching them cannot make the daemon take it early by the quiet rule
    daemon = Daemon(
        spool, VOICEDROP_WATCHER__MODE="inotify", VOICEDROP_WATCHER__STABLE_DELAY_S="60"
    )
    text = json.dumps({"text": "Written in pieces.", "tts": {"engine": "espeak"}})
    target = spool / "inbox" / "slow.json"
    try:
        with target.open("w") as fh:
            for i in range(0, len(text), len(text) // 4 + 1):
                fh.write(text[i : i + len(text) // 4 + 1])
                fh.flush()
                time.sleep(0.4)
                assert target.exists(), "claimed before the writer closed it"
                assert list((spool / "work").iterdir()) == []
        daemon.wait_for(lambda: done(spool, "slow"), "slow job")
    finally:
        daemon.stop()
    assert report(spool, "outbox", "slow")["status"] == "done"


def slow_job(spool: Path, name: str, work_s: float, **extra) -> None:
    data = {"text": "x", "tts": {"engine": "noop", "options": {"work_s": work_s}}, **extra}
    (spool / "inbox" / ".incoming" / name).write_text(json.dumps(data))
    os.rename(spool / "inbox" / ".incoming" / name, spool / "inbox" / name)


def test_sigterm_during_a_job_lets_it_finish(spool):
    daemon = Daemon(spool)
    slow_job(spool, "long.json", 2.0)
    daemon.wait_for(lambda: daemon.status().get("job_id") == "long", "job running")
    slow_job(spool, "next.json", 0.0)
    assert daemon.stop(signal.SIGTERM) == 0
    assert report(spool, "outbox", "long")["status"] == "done"
    assert (spool / "inbox" / "next.json").exists(), "after SIGTERM nothing new is claimed"


def test_kill_9_during_a_job_then_restart_completes_it_exactly_once(spool):
    daemon = Daemon(spool)
    slow_job(spool, "fragile.json", 3.0, id="client-fragile")
    daemon.wait_for(lambda: daemon.status().get("job_id") == "fragile", "job running")
    daemon.stop(signal.SIGKILL)
    assert (spool / "work" / "fragile" / "manifest.json").exists()
    daemon = Daemon(spool)
    try:
        daemon.wait_for(lambda: done(spool, "fragile"), "recovered job", timeout=30)
    finally:
        assert daemon.stop() == 0
    data = report(spool, "outbox", "fragile")
    assert data["status"] == "done" and data["attempt"] == 2
    assert [p.name for p in (spool / "outbox").iterdir()] == ["fragile"]
    assert list((spool / "failed").iterdir()) == [] and list((spool / "work").iterdir()) == []


def test_submit_wait_and_status(spool, tmp_path):
    daemon = Daemon(spool)
    try:
        result = voicedrop(
            "submit", str(ROOT / "sample_inbox" / "hello-en.json"), "--wait", spool=spool
        )
        assert result.returncode == 0, result.stderr
        status_line = result.stdout.strip().splitlines()[-1]
        assert status_line.startswith("done: ") and Path(status_line[6:]).exists()
        refused = voicedrop(
            "submit", str(ROOT / "sample_inbox" / "bad-unknown-voice.json"), "--wait", spool=spool
        )
        assert refused.returncode == 2 and "unknown espeak voice 'nobody'" in refused.stderr
        silent = tmp_path / "silent.json"
        silent.write_text(
            json.dumps({"text": "x", "tts": {"engine": "noop", "options": {"seconds": 0}}})
        )
        bad = voicedrop("submit", str(silent), "--wait", spool=spool)
        assert bad.returncode == 1 and "failed: " in bad.stdout
        assert "empty_audio: the noop engine produced no audio" in bad.stdout  # says why
        status = json.loads(voicedrop("status", "--json", spool=spool).stdout)
        assert status["daemon"] == "running"
        assert status["queue"]["outbox"] == 1 and status["queue"]["failed"] == 1
        assert set(status["vram"]) == VRAM_KEYS
    finally:
        daemon.stop()
    after = json.loads(voicedrop("status", "--json", spool=spool).stdout)
    assert after["daemon"] == "not running"


def test_run_once_processes_the_inbox_and_exits(spool):
    (spool / "inbox").mkdir(parents=True)
    for sample in SAMPLES:
        shutil.copy2(sample, spool / "inbox" / sample.name)
    result = voicedrop("run", "--once", spool=spool)
    assert result.returncode == 0, result.stderr
    assert summary(result) == {"done": 4, "failed": 1, "duplicate": 0}
    check_sample_results(spool)
    again = voicedrop("run", "--once", spool=spool)  # counts what this run did, not the outbox
    assert again.returncode == 0 and summary(again) == {"done": 0, "failed": 0, "duplicate": 0}


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """What `run --once` says it did: off a terminal, one JSON event like every line."""
    assert result.stdout == ""
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    [said] = [e for e in events if e["event"] == "run.summary"]
    return {k: said[k] for k in ("done", "failed", "duplicate")}


def test_validate_and_schema(spool):
    result = voicedrop("validate", *map(str, SAMPLES), spool=spool)
    assert result.returncode == 1
    assert "bad-unknown-voice.json: tts.voice: unknown espeak voice 'nobody'" in result.stdout
    assert result.stdout.count(": ok") == 4
    schema = json.loads(voicedrop("schema", spool=spool).stdout)
    assert "tts" in schema["properties"]


def test_invalid_setting_stops_start_up_with_a_clear_message(spool, tmp_path):
    """Off a terminal (systemd, a container) the reason is a JSON event like every line."""
    result = voicedrop("run", "--once", spool=spool, LOW_VRAM="maybe")
    assert result.returncode == 2
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["service.refused"]
    assert "LOW_VRAM='maybe' is invalid" in events[0]["error"] and events[0]["level"] == "error"
    (tmp_path / "broken.toml").write_text("[tts\n")
    result = voicedrop("--config", str(tmp_path / "broken.toml"), "serve", spool=spool)
    assert result.returncode == 2
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert "is not valid TOML" in event["error"]
    result = voicedrop("validate", str(tmp_path / "x.json"), spool=spool, LOW_VRAM="maybe")
    assert result.returncode == 2  # a command a person types: one plain line
    assert result.stderr.startswith("voicedrop: ") and "LOW_VRAM='maybe'" in result.stderr


def test_the_daemon_runs_jobs_and_answers_status_without_importing_torch(spool):
    (spool / "inbox").mkdir(parents=True)
    shutil.copy2(ROOT / "sample_inbox" / "hello-en.json", spool / "inbox")
    probe = (
        "import sys, threading\n"
        "from voicedrop.cli import main\n"
        "assert main(['run', '--once']) == 0\n"
        "assert main(['status']) == 0\n"
        "print('torch imported:', 'torch' in sys.modules, file=sys.__stdout__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=env_for(spool),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert done(spool, "hello-en")


def test_submit_carries_the_reference_recording_under_a_name_of_its_own(spool, tmp_path):
    sf.write(str(tmp_path / "alice.wav"), [0.0] * 4410, 22050)
    manifest = tmp_path / "clone.json"
    # noop takes any voice; zero seconds of audio makes the job fail, so that its folder
    # (with the inputs it was given) lands in failed/ where the test can look at it
    tts = {"engine": "noop", "voice": "alice.wav", "options": {"seconds": 0}}
    manifest.write_text(json.dumps({"text": "Hi.", "tts": tts}))
    first = voicedrop("submit", str(manifest), spool=spool)
    voicedrop("submit", str(manifest), spool=spool)
    assert first.returncode == 0, first.stderr
    assert len(list((spool / "inbox" / "refs").iterdir())) == 2  # one private copy each
    job = first.stdout.split(" as job ")[1].strip()
    assert voicedrop("run", "--once", spool=spool).returncode == 0
    folder = spool / "failed" / job
    assert report(spool, "failed", job)["error"]["code"] == "empty_audio"
    [copied] = (folder / "inputs").iterdir()
    assert copied.name.endswith("-alice.wav") and sf.info(str(copied)).frames == 4410
    assert list((spool / "inbox" / "refs").iterdir()) == []  # the jobs have them: cleaned up


def test_systemd_notifications_ready_status_watchdog_stopping(spool, tmp_path):
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(10)
        daemon = Daemon(spool, NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
        messages = [server.recv(4096).decode()]
        while not any("READY=1" in m for m in messages):
            messages.append(server.recv(4096).decode())
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
        assert "STATUS=watching" in messages[ready]
        while not any("WATCHDOG=1" in m for m in messages[ready + 1 :]):
            messages.append(server.recv(4096).decode())  # pinged while idle
        assert daemon.stop() == 0
        while not any("STOPPING=1" in m for m in messages):
            messages.append(server.recv(4096).decode())


def test_a_removed_state_directory_is_not_taken_for_a_replaced_inbox(spool: Path):
    """Its control folder is watched too: removing it re-arms that watch, says so, and
    requests to the daemon are answered again (it was reported as a replaced inbox)."""
    from voicedrop.spool.control import ControlRequest, read_answer, send

    daemon = Daemon(spool, VOICEDROP_WATCHER__SCAN_INTERVAL_S="3600")
    try:
        shutil.rmtree(daemon.state / "control")
        daemon.wait_for(lambda: "watcher.control_replaced" in daemon.logs(), "the re-arm", 10)
        assert "watcher.inbox_replaced" not in daemon.logs()
        request = send(daemon.state, ControlRequest(op="load", key="noop"))
        answer: dict = {}
        daemon.wait_for(
            lambda: answer.update(read_answer(daemon.state, request) or {}) or answer,
            "the answer to a load request",
            30,
        )
        assert answer.get("ok") is True, answer
    finally:
        assert daemon.stop() == 0


def test_an_inbox_deleted_and_created_again_is_watched_again(spool: Path):
    """An inotify watch dies silently with its directory: the daemon must notice and re-arm,
    not wait for the periodic rescan (set beyond the test's patience here)."""
    daemon = Daemon(spool, VOICEDROP_WATCHER__SCAN_INTERVAL_S="3600")
    try:
        inbox = spool / "inbox"
        shutil.rmtree(inbox)
        inbox.mkdir()
        daemon.wait_for(lambda: "watcher.inbox_replaced" in daemon.logs(), "the re-arm", 10)
        (inbox / "again.json").write_text(json.dumps({"text": "Hi.", "tts": {"engine": "noop"}}))
        daemon.wait_for(lambda: done(spool, "again"), "the job in the new inbox", 120)
    finally:
        assert daemon.stop() == 0
