"""The engines as a user meets them: `voicedrop selftest`, then a real daemon on the models
it kept, `models check` and `models fetch` offline. Real processes, real directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import VRAM_KEYS

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


def voicedrop(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_VRAM"))}
    return subprocess.run(
        [sys.executable, "-m", "voicedrop", *args],
        env={**base, "HF_HUB_OFFLINE": "1", "VOICEDROP_DEVICE": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`voicedrop selftest --json --keep DIR`: every engine ok, and the models left behind."""
    keep = tmp_path_factory.mktemp("selftest")
    result = voicedrop("selftest", "--json", "--keep", str(keep))
    assert result.returncode == 0, result.stderr[-3000:]
    return keep, json.loads(result.stdout)


def test_selftest_passes_every_engine_under_low_and_normal(kept):
    _, data = kept
    for name in ("xtts", "f5tts", "rvc"):
        entry = data["engines"][name]
        assert entry["status"] == "ok", entry
        for mode in ("low", "normal"):
            run = entry[mode]
            assert run["ok"] and run["audio_s"] > 0.3 and run["sample_rate"] in (24000, 40000)
            assert any(e.startswith("load ") for e in run["events"])
            assert set(run["vram_after"]) == VRAM_KEYS
        assert entry["low"]["vram_after"]["low_vram_mode"] is True
        assert entry["normal"]["vram_after"]["low_vram_mode"] is False
        assert any(" device->host" in e for e in entry["low"]["events"])  # LOW demotes


def test_the_daemon_runs_a_job_per_engine_on_the_kept_models(kept):
    keep, _ = kept
    spool = keep / "spool"
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    env = {"VOICEDROP_SPOOL": str(spool), "VOICEDROP_LOG_FORMAT": "json", "LOW_VRAM": "true"}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_VRAM"))}
    log = (keep / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicedrop", "--config", str(keep / "config.toml"), "run"],
        env={**base, "HF_HUB_OFFLINE": "1", "VOICEDROP_DEVICE": "cpu", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    jobs = {
        "x": {"text": "Hello from XTTS.", "tts": {"engine": "xtts", "voice": "tiny-xtts"}},
        "f": {"text": "Hello from F5.", "tts": {"engine": "f5tts", "voice": "tiny-f5"}},
        "r": {
            "text": "Hello from RVC.",
            "tts": {"engine": "espeak"},
            "convert": {"engine": "rvc", "model": "tiny-rvc", "method": "harvest"},
        },
    }
    try:
        deadline = time.monotonic() + 60
        while not (spool / "state" / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for name, manifest in jobs.items():  # written elsewhere, renamed in: complete on arrival
            tmp = inbox / ".incoming" / f"{name}.partial"
            tmp.parent.mkdir(exist_ok=True)
            tmp.write_text(json.dumps(manifest))
            tmp.rename(inbox / f"{name}.json")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all((spool / "outbox" / n / "report.json").exists() for n in jobs):
                break
            assert proc.poll() is None, (keep / "daemon.log").read_text()[-3000:]
            assert not any((spool / "failed").iterdir()), [
                json.loads((d / "report.json").read_text())["error"]
                for d in (spool / "failed").iterdir()
            ]
            time.sleep(0.1)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        log.close()
    for name, engine in (("x", "xtts"), ("f", "f5tts"), ("r", "rvc")):
        report = json.loads((spool / "outbox" / name / "report.json").read_text())
        assert report["status"] == "done" and engine in report["versions"]
        [out] = report["outputs"]
        audio, rate = sf.read(spool / "outbox" / name / out["file"])
        assert rate == out["sample_rate"] and len(audio) > rate // 4
        assert report["vram"]["after"]["allocated_gb"] == 0.0  # LOW: nothing stays


def test_models_check_passes_whole_files_and_names_a_damaged_one(kept, tmp_path):
    keep, _ = kept
    ok = voicedrop("--config", str(keep / "config.toml"), "models", "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    engines.xtts.model_dir" in ok.stdout and "models.tiny-rvc.path" in ok.stdout
    voice = keep / "rvc" / "voice.pth"
    broken = keep / "rvc" / "broken.pth"
    broken.write_bytes(voice.read_bytes()[:-100])
    config = keep / "broken.toml"  # beside the models: its relative paths resolve the same
    config.write_text((keep / "config.toml").read_text().replace("rvc/voice.pth", "rvc/broken.pth"))
    bad = voicedrop("--config", str(config), "models", "check")
    broken.unlink()
    config.unlink()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"FAIL  models.tiny-rvc.path: {broken}" in bad.stdout


def test_models_fetch_says_plainly_that_it_needs_the_hub():
    result = voicedrop("models", "fetch", "xtts", "/tmp/never-written")
    assert result.returncode == 2 and "HF_HUB_OFFLINE" in result.stderr
    assert not Path("/tmp/never-written").exists()


def test_models_fetch_without_a_network_says_so_in_one_line_and_leaves_nothing(tmp_path):
    """It retried for 26 s, printed a 45-line traceback and left DIR/xtts-v2/.cache."""
    target = tmp_path / "models"
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://hub.invalid"}  # no such host
    result = voicedrop("models", "fetch", "xtts", str(target), **env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot reach the model hub" in result.stderr
    assert "Traceback" not in result.stderr and not target.exists()


def test_validate_stops_at_a_bad_configuration(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text().replace("rate = 165", "rate = 2000"))
    result = voicedrop(
        "--config", str(config), "validate", str(ROOT / "sample_inbox" / "hello-en.json")
    )
    assert result.returncode == 2 and "engines.espeak.rate = 2000" in result.stderr
