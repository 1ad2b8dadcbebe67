"""1,000 manifests at once into a real daemon, under inotify and under polling: each runs once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import stress
from tests.system.test_daemon import Daemon

pytestmark = pytest.mark.system
BURST = stress(1000)


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_burst_of_manifests_runs_each_exactly_once(tmp_path: Path, mode: str, figures):
    spool = tmp_path / "spool"
    daemon = Daemon(spool, VOICEDROP_WATCHER__MODE=mode, VOICEDROP_WATCHER__POLL_INTERVAL_S="0.2")
    try:
        staging = spool / "inbox" / ".incoming"
        manifest = json.dumps({"text": "x", "tts": {"engine": "noop"}})
        for i in range(BURST):  # written elsewhere, then renamed in as fast as we can
            (staging / f"b{i:06}.partial").write_text(manifest)
        for i in range(BURST):
            os.rename(staging / f"b{i:06}.partial", spool / "inbox" / f"b{i:06}.json")
        outbox = spool / "outbox"
        daemon.wait_for(lambda: len(os.listdir(outbox)) == BURST, "the whole burst", stress(120))
    finally:
        assert daemon.stop() == 0
    reports = [json.loads((outbox / d / "report.json").read_text()) for d in os.listdir(outbox)]
    assert sorted(r["job_id"] for r in reports) == [f"b{i:06}" for i in range(BURST)]
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in reports)
    assert os.listdir(spool / "failed") == [] and os.listdir(spool / "work") == []
    assert not [n for n in os.listdir(spool / "inbox") if n.endswith(".json")]
    figures(jobs=BURST, mode=mode)


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_manifest_truncated_and_rewritten_runs_once_with_its_final_content(
    tmp_path: Path, mode: str
):
    """An editor that writes, truncates and writes again in one open: never taken early,
    run once, with the text it ends with."""
    import time

    spool = tmp_path / "spool"
    # inotify: the close completes it, so the quiet rule may wait long; polling sees no
    # close, so it waits the delay out: well beyond the writer's pauses on a busy machine
    delay = "60" if mode == "inotify" else "6"
    daemon = Daemon(
        spool,
        VOICEDROP_WATCHER__MODE=mode,
        VOICEDROP_WATCHER__STABLE_DELAY_S=delay,
        VOICEDROP_WATCHER__POLL_INTERVAL_S="0.2",
    )
    target = spool / "inbox" / "edit.json"
    final = {"text": "The final words.", "tts": {"engine": "noop"}}
    try:
        with target.open("w") as fh:
            fh.write('{"text": "A first draft that is not even JSON')
            fh.flush()
            time.sleep(0.5)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"text": "A second draft.", "tts": {"engine": "noop"}}))
            fh.flush()
            time.sleep(0.5)
            assert target.exists(), "taken while its writer still had it open"
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(final))
        outbox = spool / "outbox"
        daemon.wait_for(lambda: (outbox / "edit" / "report.json").exists(), "the job", 30)
    finally:
        assert daemon.stop() == 0
    report = json.loads((spool / "outbox" / "edit" / "report.json").read_text())
    assert report["manifest"]["text"] == "The final words." and report["attempt"] == 1
    assert os.listdir(spool / "failed") == []
