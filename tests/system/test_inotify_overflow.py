"""A real inotify queue overflow: the kernel drops the events, the daemon rescans and loses nothing.

The daemon is stopped (SIGSTOP) so that its observer cannot read; more events than the
kernel's queue holds (`fs.inotify.max_queued_events`, 16,384 by default) are made by
unrelated files, and only then are the manifests renamed in: their events are all dropped,
and the kernel queues a single IN_Q_OVERFLOW in their place. The periodic rescan is set to
ten minutes, so only the daemon's reaction to the overflow can find them in time.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import stress
from tests.system.test_daemon import Daemon

pytestmark = pytest.mark.system
JOBS = stress(200)
QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")


def _queue_size() -> int:
    try:
        return int(QUEUE.read_text())
    except (OSError, ValueError):
        pytest.skip("no inotify on this system")


def test_manifests_whose_events_the_kernel_dropped_still_run_once(tmp_path: Path, figures):
    queue = _queue_size()
    if queue > 200_000:
        pytest.skip(f"fs.inotify.max_queued_events is {queue}: too many files to overflow it")
    spool = tmp_path / "spool"
    daemon = Daemon(
        spool,
        VOICEDROP_WATCHER__MODE="inotify",
        VOICEDROP_WATCHER__SCAN_INTERVAL_S="600",
        VOICEDROP_WATCHER__STABLE_DELAY_S="0.5",
    )
    inbox, outbox = spool / "inbox", spool / "outbox"
    try:
        daemon.proc.send_signal(signal.SIGSTOP)  # its observer reads nothing from now on
        for i in range(queue + 1000):
            (inbox / f"clutter-{i:06}.txt").touch()
        staging = inbox / ".incoming"
        manifest = json.dumps({"text": "x", "tts": {"engine": "noop"}})
        for i in range(JOBS):
            (staging / f"o{i:06}.partial").write_text(manifest)
            os.rename(staging / f"o{i:06}.partial", inbox / f"o{i:06}.json")
        daemon.proc.send_signal(signal.SIGCONT)
        daemon.wait_for(
            lambda: len(os.listdir(outbox)) == JOBS, "every job, by the rescan", stress(120)
        )
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.stop() == 0
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    assert any(e["event"] == "watcher.overflow" for e in events), "no overflow seen"
    reports = [json.loads((outbox / d / "report.json").read_text()) for d in os.listdir(outbox)]
    assert sorted(r["job_id"] for r in reports) == [f"o{i:06}" for i in range(JOBS)]
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in reports)
    assert os.listdir(spool / "failed") == [] and os.listdir(spool / "work") == []
    overflows = sum(e["event"] == "watcher.overflow" for e in events)
    figures(jobs=JOBS, clutter_files=queue + 1000, kernel_queue=queue, overflows=overflows)
