"""A real full disk: the spool on a small tmpfs, filled to the last byte while jobs wait.

Needs root (mount); elsewhere the same paths are covered by ENOSPC injected at the
spool layer (tests/unit/test_executor.py).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import stress
from tests.system.test_daemon import Daemon

pytestmark = pytest.mark.system
JOBS = stress(12)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={4 * JOBS // 12}m", "tmpfs", str(mount)],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write until the file system refuses one more byte."""
    with path.open("wb", buffering=0) as fh:
        block = b"\0" * 65536
        while block:
            try:
                fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                block = block[: len(block) // 2]


def _every_job(spool: Path) -> list[str]:
    """Every job the spool knows of, wherever it is: none may vanish."""
    names = [n[:-5] for n in os.listdir(spool / "inbox") if n.endswith(".json")]
    for folder in ("work", "outbox", "failed"):
        names += os.listdir(spool / folder)
    return sorted(names)


@pytest.mark.parametrize("slack", [0, 48 * 1024], ids=["full-at-claim", "full-mid-job"])
def test_jobs_wait_out_a_full_disk_and_finish_when_space_returns(
    small_disk: Path, slack: int, figures
):
    """With no slack, even claiming a job fails; with a little, a job is claimed and its
    audio (130 kB each) does not fit: that attempt fails transiently and is retried."""
    spool = small_disk  # the log goes beside it, off the small disk
    daemon = Daemon(
        spool,
        VOICEDROP_WATCHER__MODE="inotify",
        VOICEDROP_WATCHER__STABLE_DELAY_S="0.2",
        VOICEDROP_LIMITS__RETRY_DELAY_S="1",
        VOICEDROP_LIMITS__MAX_ATTEMPTS="8",
    )
    names = [f"full{i:04}" for i in range(JOBS)]
    filler = small_disk / "filler"  # not a spool folder: the daemon ignores it
    try:
        daemon.proc.send_signal(signal.SIGSTOP)  # drop the jobs, then fill what is left
        for name in names:
            text = f"Job {name} waits for space."
            tts = {"engine": "noop", "options": {"seconds": 3.0}}
            manifest = {"text": text, "tts": tts, "output": {"format": "wav"}}
            (spool / "inbox" / f"{name}.json").write_text(json.dumps(manifest))
        (small_disk / "slack").write_bytes(b"\0" * slack)
        _fill(filler)
        (small_disk / "slack").unlink()
        daemon.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # the disk stays full: nothing may be lost
            assert _every_job(spool) == names
            assert daemon.proc.poll() is None, daemon.logs()
            time.sleep(0.2)
        assert not os.listdir(spool / "outbox"), "a job finished on a full disk"
        filler.unlink()
        outbox = spool / "outbox"
        daemon.wait_for(
            lambda: len(os.listdir(outbox)) == JOBS, "every job after the disk", stress(90)
        )
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.stop() == 0
    lines = (small_disk.parent / "daemon.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # the log stays JSON, tracebacks included
    assert any(e["level"] in ("warning", "error") and "28" in json.dumps(e) for e in events)
    retried = []
    for name in names:
        report = json.loads((outbox / name / "report.json").read_text())
        assert report["status"] == "done", report
        retried += [e["message"] for e in report["previous_errors"]]
        for out in report["outputs"]:
            audio, rate = sf.read(outbox / name / out["file"])
            assert rate == out["sample_rate"] and len(audio) > 0
    if slack:
        assert retried and all("No space left" in m for m in retried), retried
    spool_errors = sum(e["event"] == "executor.spool_error" for e in events)
    figures(
        jobs=JOBS, full_for_s=6, attempts_lost_to_enospc=len(retried), spool_errors=spool_errors
    )
    leftovers = [p for p in spool.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert (
        leftovers == [] and os.listdir(spool / "work") == [] and os.listdir(spool / "failed") == []
    )


def test_a_disk_full_for_a_minute_never_stops_the_daemon(small_disk: Path, figures):
    """The state directory on the spool's filesystem (the default): the status heartbeat,
    the metrics textfile and every other state write fail for a minute. Each is said once
    (not every heartbeat), nothing is left half-written, the log stays JSON, and when
    space returns the daemon says so and takes jobs again."""
    spool = small_disk
    daemon = Daemon(
        spool,
        VOICEDROP_WATCHER__MODE="inotify",
        VOICEDROP_METRICS__TEXTFILE=str(spool / "state" / "voicedrop.prom"),
        VOICEDROP_METRICS__INTERVAL_S="1",
    )
    filler = small_disk / "filler"
    full_for = stress(60)
    try:  # its device worker warmed up first (its warm-up writes what a first job measures)
        daemon.wait_for(lambda: daemon.status().get("warming") is False, "the daemon warm", 120)
        _fill(filler)
        deadline = time.monotonic() + full_for  # a minute: six heartbeats
        while time.monotonic() < deadline:
            assert daemon.proc.poll() is None, daemon.logs()
            time.sleep(0.5)
        filler.unlink()
        daemon.wait_for(
            lambda: len(daemon.events("state.write_recovered")) >= 2, "writes working again"
        )
        name = "after-the-full-disk"
        (spool / "inbox" / f"{name}.json").write_text(
            json.dumps({"text": "x", "tts": {"engine": "noop"}})
        )
        daemon.wait_for(lambda: (spool / "outbox" / name / "report.json").exists(), "a job")
    finally:
        assert daemon.stop() == 0
    lines = (small_disk.parent / "daemon.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line JSON: no traceback
    failed = [e for e in events if e["event"] == "state.write_failed"]
    assert sorted(e["what"] for e in failed) == ["metrics textfile", "status"], failed
    assert all("ENOSPC" in e["error"] for e in failed)
    leftovers = [p.name for p in spool.rglob("*") if ".tmp" in p.name or ".prom." in p.name]
    assert leftovers == []
    figures(full_for_s=full_for, said=len(failed))
