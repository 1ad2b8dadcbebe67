"""Models under the client's control, through a real daemon: the list, load and unload over
HTTP, a job's keep_alive, and preload at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.test_daemon import env_for
from tests.system.test_http import Server

pytestmark = pytest.mark.system


def test_models_are_listed_loaded_and_unloaded_on_request(tmp_path: Path):
    srv = Server(tmp_path / "spool")
    try:
        listed = srv.http.get("/models").json()
        assert {"espeak", "noop", "tape:chipmunk"} <= set(listed)
        assert listed["tape:chipmunk"]["tier"] == "disk"
        loaded = srv.http.post("/models/tape:chipmunk/load", json={"keep_alive": "5m"})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["tier"] == "device" and loaded.json()["keep_alive_s"] == 300.0
        assert srv.http.get("/models").json()["tape:chipmunk"]["leaves_in_s"] <= 300.0
        unloaded = srv.http.post("/models/tape:chipmunk/unload")
        assert unloaded.status_code == 200 and unloaded.json()["tier"] == "disk"
        unknown = srv.http.post("/models/nothing/load")
        assert unknown.status_code == 404 and "tape:chipmunk" in unknown.json()["detail"][0]
        bad = srv.http.post("/models/espeak/load", json={"keep_alive": "soon"})
        assert bad.status_code == 422
    finally:
        assert srv.stop() == 0


def test_a_jobs_keep_alive_zero_sends_its_model_away_after_the_job(tmp_path: Path):
    srv = Server(tmp_path / "spool")  # NORMAL: models stay, unless the job says otherwise
    try:
        kept = {"text": "Stay.", "tts": {"engine": "espeak"}}
        srv.wait_done(srv.http.post("/tts/synthesize", json=kept).json()["id"])
        assert srv.http.get("/models").json()["espeak"]["tier"] == "device"
        gone = {"text": "Go.", "tts": {"engine": "espeak"}, "keep_alive": 0}
        srv.wait_done(srv.http.post("/tts/synthesize", json=gone).json()["id"])
        assert srv.http.get("/models").json()["espeak"]["tier"] != "device"
    finally:
        assert srv.stop() == 0


def test_preloaded_models_are_on_the_device_before_the_first_job(tmp_path: Path):
    srv = Server(tmp_path / "spool", VOICEDROP_RESIDENCY__PRELOAD='["tape:chipmunk"]')
    try:
        # preload runs once the daemon is ready, before its loop answers any request:
        # the answer to this one comes after it
        assert srv.http.post("/models/noop/unload").status_code == 200
        assert srv.http.get("/models").json()["tape:chipmunk"]["tier"] == "device"
    finally:
        assert srv.stop() == 0
    refused = subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", "--once"],
        env=env_for(tmp_path / "other", VOICEDROP_RESIDENCY__PRELOAD='["xtts-typo"]'),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "residency.preload" in refused.stderr
