"""The status outputs as listeners, on an injected clock: status.json and systemd's
STATUS= tell a new job or stage at once and throttle progress; the heartbeat rewrites
status.json; the watchdog is fed at half its period."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from voicedrop.daemon.status_file import (
    HEARTBEAT_S,
    STATUS_INTERVAL_S,
    Heartbeat,
    StatusFile,
    SystemdStatus,
)
from voicedrop.report import JobReport, VramSnapshot, VramStats
from voicedrop.testing import ManualClock

STATS = VramStats(
    available=False,
    low_vram_mode=False,
    allocated_gb=0.0,
    reserved_gb=0.0,
    free_gb=1.0,
    total_gb=1.0,
    cached_models=0,
)


class Notes:
    """A notifier that keeps what it was told."""

    def __init__(self, watchdog_s: float | None = None) -> None:
        self.watchdog_s = watchdog_s
        self.sent: list[dict[str, str]] = []

    def notify(self, **fields: str) -> None:
        self.sent.append(fields)


def snapshot() -> dict[str, Any]:
    return {"watcher": "inotify", "device": "cpu", "policy": "normal", "vram": STATS}


def report(job_id: str) -> JobReport:
    return JobReport(
        job_id=job_id,
        status="done",
        source=f"{job_id}.json",
        attempt=1,
        vram=VramSnapshot(before=STATS, after=STATS),
    )


def written(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_a_new_job_and_a_new_stage_are_written_at_once_progress_is_throttled(tmp_path):
    clock, path = ManualClock(100.0), tmp_path / "status.json"
    status = StatusFile(path, snapshot, clock)
    status.started("j", 1)
    assert written(path)["state"] == "running" and written(path)["job_id"] == "j"
    status.stage("j", "tts 1/10")
    status.stage("j", "tts 2/10")  # same stage, within the interval: held back
    assert written(path)["stage"] == "tts 1/10"
    clock.now += STATUS_INTERVAL_S
    status.stage("j", "tts 3/10")
    assert written(path)["stage"] == "tts 3/10"
    status.stage("j", "post")  # a new stage: at once
    assert written(path)["stage"] == "post"
    status.stage("j", "post 2/2")  # the same stage again, within the interval
    assert written(path)["stage"] == "post"
    status.flush()  # what the loop does before it waits: what was held back
    assert written(path)["stage"] == "post 2/2"
    status.finished(report("j"))  # the job's end: at once
    assert written(path)["state"] == "idle" and written(path)["job_id"] is None
    assert written(path)["vram"]["free_gb"] == 1.0 and written(path)["watcher"] == "inotify"


def test_the_heartbeat_rewrites_the_status_file_with_nothing_new(tmp_path):
    clock, path = ManualClock(100.0), tmp_path / "status.json"
    status = StatusFile(path, snapshot, clock)
    status.set_state("idle")
    first = written(path)["updated"]
    status.beat()
    assert written(path)["updated"] == first, "rewritten before the heartbeat was due"
    clock.now += HEARTBEAT_S
    status.beat()
    assert written(path)["updated"] > first


def until(condition: Any, what: str) -> None:
    """Wait on a state the heartbeat thread makes (not on a guess of how long it takes)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_a_long_job_keeps_the_daemon_ready_while_its_loop_lives(tmp_path):
    """A job that tells nothing for longer than the heartbeat (one long sentence): the
    heartbeat thread rewrites the loop's last status, with the time of now, so /health
    stays ready; once the loop's thread is gone, the heartbeat stops."""
    clock, path = ManualClock(100.0), tmp_path / "status.json"
    status = StatusFile(path, snapshot, clock)
    status.started("long", 1)
    first = written(path)["updated"]
    in_job = threading.Event()
    loop = threading.Thread(target=in_job.wait)  # the executor, inside the job
    loop.start()
    beat = Heartbeat(status, loop, period_s=0.001)
    with beat:
        clock.now += HEARTBEAT_S / 2
        time.sleep(0.05)  # many periods of the thread: nothing was due, nothing written
        assert written(path)["updated"] == first
        clock.now += HEARTBEAT_S / 2
        until(lambda: written(path)["updated"] > first, "no heartbeat during a long job")
        assert written(path)["state"] == "running" and written(path)["job_id"] == "long"
        in_job.set()  # the job ends: the loop's thread too
        loop.join()
        until(lambda: not beat._thread.is_alive(), "the heartbeat outlived the loop")


def test_the_heartbeat_never_tells_an_old_status_over_a_newer_one(tmp_path):
    """The loop's status is the truth: a beat rewrites it only if nothing newer came, and
    a stopped daemon's status is not made fresh again."""
    clock, path = ManualClock(100.0), tmp_path / "status.json"
    status = StatusFile(path, snapshot, clock)
    status.started("j", 1)
    status.finished(report("j"))
    clock.now += HEARTBEAT_S
    status.refresh()
    assert written(path)["state"] == "idle"
    status.set_state("stopped")
    stopped = written(path)["updated"]
    clock.now += HEARTBEAT_S
    status.refresh()
    assert written(path)["updated"] == stopped


def test_a_status_file_that_cannot_be_written_is_said_once_and_never_raises(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    folder_is_a_file = blocked / "status.json"
    status = StatusFile(folder_is_a_file, snapshot, ManualClock(100.0))
    with capture_logs() as said:
        status.started("j", 1)
        status.stage("j", "tts")
        status.finished(report("j"))
    assert [e["event"] for e in said] == ["state.write_failed"]
    assert status.told is not None and status.told.state == "idle"  # the metrics still see it


def test_systemd_hears_the_job_and_stage_and_the_watchdog_at_half_its_period():
    clock, notes = ManualClock(100.0), Notes(watchdog_s=20.0)
    systemd = SystemdStatus(notes, clock)  # type: ignore[arg-type]
    systemd.started("j", 1)
    systemd.stage("j", "tts 1/3")
    statuses = [n["status"] for n in notes.sent if "status" in n]
    assert statuses == ["running: j (None)", "running: j (tts 1/3)"]
    pings = [n for n in notes.sent if "watchdog" in n]
    assert len(pings) == 1
    clock.now += 9.0
    systemd.watchdog()
    assert len([n for n in notes.sent if "watchdog" in n]) == 1, "pinged before half the period"
    clock.now += 1.0
    systemd.watchdog()
    assert len([n for n in notes.sent if "watchdog" in n]) == 2
    systemd.finished(report("j"))
    systemd.flush()
    assert [n["status"] for n in notes.sent if "status" in n][-1] == "idle"


def test_without_a_watchdog_systemd_is_never_pinged():
    notes = Notes(watchdog_s=None)
    systemd = SystemdStatus(notes, ManualClock(100.0))  # type: ignore[arg-type]
    systemd.started("j", 1)
    systemd.watchdog()
    assert not [n for n in notes.sent if "watchdog" in n]
