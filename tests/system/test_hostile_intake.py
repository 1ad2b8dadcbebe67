"""Whatever lands in the inbox, a real daemon answers it with exactly one report and lives on.

The parser's own property (tests/unit/test_manifest.py) is not enough: the queue reads a
manifest before claiming it (its look-ahead), the dashboard and `validate` read it too,
and a crash in any of them stopped the service. Here arbitrary bytes, JSON no encoder
writes, FIFOs and folders named like manifests go through the whole intake path of a
running daemon watching a real directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import stress
from tests.system.test_daemon import Daemon, env_for, voicedrop
from tests.unit.test_manifest import hostile_json, near_manifests

pytestmark = pytest.mark.system
NOOP = {"engine": "noop"}

valid_ish = st.fixed_dictionaries(
    {"text": st.text(min_size=1, max_size=40), "tts": st.just(NOOP)},
    optional={
        "id": st.text(max_size=20),
        "output": st.fixed_dictionaries(
            {},
            optional={
                "format": st.sampled_from(["wav", "flac", "mp3", "opus", "aiff"]),
                "sample_rate": st.integers(-10, 10**6),
                "name": st.text(max_size=70),
            },
        ),
        "segments": st.lists(st.fixed_dictionaries({"id": st.text(), "text": st.text()})),
    },
)
inbox_bytes = st.one_of(
    st.binary(max_size=400),
    near_manifests.map(lambda d: json.dumps(d).encode()),
    valid_ish.map(lambda d: json.dumps(d).encode()),
    hostile_json,
)


def reports_for(spool: Path, job_id: str) -> list[dict]:
    found = []
    for folder in ("outbox", "failed"):
        for job in (spool / folder).glob(f"{job_id}*"):
            if job.name == job_id or job.name.startswith(f"{job_id}-"):
                found.append(json.loads((job / "report.json").read_text()))
    return found


def test_arbitrary_bytes_dropped_into_a_running_daemon_get_exactly_one_report_each(
    tmp_path: Path, figures
):
    spool = tmp_path / "spool"
    daemon = Daemon(spool, VOICEDROP_WATCHER__MODE="inotify")
    inbox = spool / "inbox"
    seen = {"n": 0, "failed": 0}
    try:

        @settings(
            max_examples=stress(60),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(inbox_bytes)
        def one_drop(raw: bytes) -> None:
            job_id = f"h{seen['n']:05}"
            seen["n"] += 1
            staged = inbox / ".incoming" / f"{job_id}.partial"
            staged.write_bytes(raw)
            staged.rename(inbox / f"{job_id}.json")
            daemon.wait_for(lambda: reports_for(spool, job_id), f"a report for {job_id}")
            [report] = reports_for(spool, job_id)  # exactly one
            assert report["status"] in ("done", "failed", "duplicate")
            if report["status"] == "failed":
                seen["failed"] += 1
                assert report["error"]["message"]
                assert report["error"]["code"] != "internal_error", report["error"]
            assert daemon.proc.poll() is None

        one_drop()
    finally:
        assert daemon.stop() == 0
    assert list((spool / "work").iterdir()) == [] and not list(inbox.glob("*.json"))
    figures(drops=seen["n"], failed=seen["failed"])


def test_a_5000_digit_number_fails_with_a_report_and_validate_and_submit_say_why(tmp_path):
    """It crash-looped the daemon: the queue's look-ahead raised before the file was claimed."""
    spool = tmp_path / "spool"
    raw = b'{"text": "x", "tts": {"engine": "noop"}, "output": {"sample_rate": ' + b"9" * 5000
    raw += b"}}"
    path = tmp_path / "big.json"
    path.write_bytes(raw)
    for command in ("validate", "submit"):
        result = voicedrop(command, str(path), spool=spool)
        assert result.returncode in (1, 2), result
        assert "too many digits" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    (spool / "inbox").mkdir(parents=True, exist_ok=True)
    (spool / "inbox" / "big.json").write_bytes(raw)
    (spool / "inbox" / "after.json").write_text(json.dumps({"text": "x", "tts": NOOP}))
    result = voicedrop("run", "--once", spool=spool)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((spool / "failed" / "big" / "report.json").read_text())
    assert report["error"]["code"] == "manifest_invalid"
    assert "too many digits" in report["error"]["message"]
    assert (spool / "outbox" / "after" / "report.json").exists()


def test_a_fifo_and_a_folder_named_like_manifests_are_failed_with_reports(tmp_path: Path):
    spool = tmp_path / "spool"
    daemon = Daemon(
        spool, VOICEDROP_WATCHER__MODE="inotify", VOICEDROP_WATCHER__STABLE_DELAY_S="0.2"
    )
    inbox = spool / "inbox"
    try:
        os.mkfifo(inbox / "pipe.json")  # reading it would wait for a writer forever
        (inbox / "folder.json").mkdir()
        (inbox / "folder.json" / "inside.txt").write_text("kept")
        (inbox / "after.json").write_text(json.dumps({"text": "x", "tts": NOOP}))
        daemon.wait_for(lambda: (spool / "outbox" / "after").exists(), "the job behind them")
        daemon.wait_for(
            lambda: all(
                (spool / "failed" / n / "report.json").exists() for n in ("pipe", "folder")
            ),
            "their reports",
        )
    finally:
        assert daemon.stop() == 0
    pipe = json.loads((spool / "failed" / "pipe" / "report.json").read_text())
    folder = json.loads((spool / "failed" / "folder" / "report.json").read_text())
    assert "a FIFO" in pipe["error"]["message"] and "a directory" in folder["error"]["message"]
    assert (spool / "failed" / "folder" / "manifest.json" / "inside.txt").read_text() == "kept"
    assert sorted(os.listdir(inbox)) == [".incoming", "refs"]


def test_a_symlinked_inbox_is_followed_and_said_and_a_replaced_inbox_carries_no_job_id(
    tmp_path: Path,
):
    spool = tmp_path / "spool"
    drop_here = spool / "nas-drop"  # the same filesystem as the spool: claims are renames
    drop_here.mkdir(parents=True)
    (spool / "inbox").symlink_to(drop_here)
    daemon = Daemon(spool, VOICEDROP_WATCHER__MODE="inotify")
    try:
        (drop_here / "a.json").write_text(json.dumps({"text": "x", "tts": NOOP}))
        daemon.wait_for(lambda: (spool / "outbox" / "a").exists(), "a job through the symlink")
        [said] = daemon.events("watcher.inbox_is_a_symlink")
        assert said["target"] == str(drop_here.resolve())
        other = spool / "other-drop"
        other.mkdir()
        # an operator re-points it while it runs, in one rename (`ln -s … && mv -T`): an
        # unlink then a symlink left a moment with no inbox, which the daemon filled with
        # a folder of its own, and the symlink then failed (File exists)
        (spool / "inbox.new").symlink_to(other)
        (spool / "inbox.new").replace(spool / "inbox")
        (other / "b.json").write_text(json.dumps({"text": "x", "tts": NOOP}))
        daemon.wait_for(lambda: (spool / "outbox" / "b").exists(), "a job in the new place")
    finally:
        assert daemon.stop() == 0
    moved = daemon.events("watcher.inbox_is_a_symlink")
    assert [e["target"] for e in moved] == [str(drop_here.resolve()), str(other.resolve())]
    assert moved[1]["level"] == "warning"
    replaced = daemon.events("watcher.inbox_replaced")
    assert replaced and all("job_id" not in e for e in replaced)


def test_every_line_the_daemon_writes_is_json_when_not_on_a_terminal(tmp_path: Path):
    """Library warnings, prints and tracebacks included: journald parses each line."""
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    (spool / "inbox" / "a.json").write_text(json.dumps({"text": "x", "tts": NOOP}))
    probe = (
        "import sys, threading, warnings\n"
        "from voicedrop.cli import main\n"
        "from voicedrop import logs\n"
        "real = logs.setup_daemon\n"
        "def setup(*a):\n"
        "    as_json = real(*a)\n"
        "    print('a library prints this')\n"
        "    print('and this, to stderr', file=sys.stderr)\n"
        "    warnings.warn('a library warns', UserWarning)\n"
        "    t = threading.Thread(target=lambda: 1 / 0); t.start(); t.join()\n"
        "    return as_json\n"
        "logs.setup_daemon = setup\n"
        "sys.exit(main(['run', '--once']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env_for(spool), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    events = [json.loads(line) for line in lines]  # every line parses
    names = [e["event"] for e in events]
    assert "run.summary" in names and "thread.crashed" in names
    texts = [e.get("text") for e in events]
    assert "a library prints this" in texts and "and this, to stderr" in texts
    assert any("a library warns" in json.dumps(e) for e in events)
