"""Whatever subtitle file lands in a hot folder, a real daemon answers it with exactly one
report and lives on.

A 62-digit cue number passed the reader and then broke the clip id built from it, outside
the job's error boundary: the daemon exited, and under systemd's Restart= it crash-looped
on the same file for good. Here arbitrary bytes and subtitles no editor writes (numbers
of any length and script, times of any size) go through the preset folder of a running
daemon watching a real directory; and the same property holds in-process for many more
files (tests/unit/test_script.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import stress
from tests.system.test_daemon import Daemon
from tests.system.test_hostile_intake import reports_for
from tests.unit.test_script import subtitle_bytes

pytestmark = pytest.mark.system


def test_arbitrary_subtitle_files_saved_into_a_hot_folder_get_exactly_one_report_each(
    tmp_path: Path, figures
):
    spool = tmp_path / "spool"
    config = tmp_path / "voicedrop.toml"
    config.write_text('[presets.dub]\ntts = { engine = "noop" }\n')
    daemon = Daemon(spool, VOICEDROP_CONFIG=str(config), VOICEDROP_WATCHER__MODE="inotify")
    hot = spool / "inbox" / "dub"
    seen = {"n": 0, "failed": 0, "done": 0}
    try:

        @settings(
            max_examples=stress(40),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(subtitle_bytes, st.sampled_from([".srt", ".vtt", ".txt"]))
        def one_file(raw: bytes, suffix: str) -> None:
            job_id = f"s{seen['n']:05}"
            seen["n"] += 1
            staged = tmp_path / f"{job_id}{suffix}"
            staged.write_bytes(raw)
            staged.rename(hot / staged.name)  # saved whole, as an editing suite's export
            daemon.wait_for(lambda: reports_for(spool, job_id), f"a report for {job_id}")
            [report] = reports_for(spool, job_id)  # exactly one
            assert report["status"] in ("done", "failed")
            seen[report["status"]] += 1
            if report["status"] == "failed":
                assert report["error"]["code"] != "internal_error", report["error"]
                assert report["error"]["field"] == "script", report["error"]
            assert daemon.proc.poll() is None

        one_file()
    finally:
        assert daemon.stop() == 0
    assert list((spool / "work").iterdir()) == []
    assert list((spool / "inbox" / "refs").iterdir()) == []
    assert not list(hot.iterdir())
    figures(files=seen["n"], failed=seen["failed"], done=seen["done"])
