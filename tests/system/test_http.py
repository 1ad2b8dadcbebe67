"""The HTTP API, as its users call it: a real `voicedrop run --http` (or `serve`) process on a
loopback port, called with httpx and with the original API's own curl command."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import VRAM_KEYS
from tests.system.test_daemon import env_for

pytestmark = pytest.mark.system
TOKEN = "s3cret-token-of-enough-length"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`voicedrop run --http` (or `serve --http`) on a spool, until stopped."""

    def __init__(self, spool: Path, command: str = "run", host: str = "127.0.0.1", **env: str):
        headers = (
            {"Authorization": f"Bearer {env['VOICEDROP_HTTP__TOKEN']}"}
            if ("VOICEDROP_HTTP__TOKEN" in env)
            else {}
        )
        self.log = spool.parent / f"{command}.log"
        for _ in range(5):  # a port another process took between free_port() and bind: again
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicedrop", command, "--http", f"{host}:{self.port}"],
                env=env_for(spool, **env),
                stdout=self.log.open("w"),
                stderr=subprocess.STDOUT,
            )
            self.http = httpx.Client(base_url=self.url, timeout=30, headers=headers)
            if self._up(daemon=command == "run"):
                return
            self.http.close()
        raise AssertionError(self.log.read_text())

    def _up(self, daemon: bool) -> bool:
        """Wait until it answers, and with a daemon beside it until that daemon is ready
        (its first status written: before that /health is 503). False: its port was taken."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text()
                assert "address already in use" in log.lower(), log
                return False
            try:
                if self.http.get("/health").status_code == 200 or not daemon:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not up in 120 s: {self.log.read_text()[-3000:]}")

    def wait_done(self, job_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.http.get(f"/jobs/{job_id}").json()
            if state["status"] in ("done", "failed"):
                return state
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.http.close()
        self.proc.terminate()
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "spool")
    yield srv
    assert srv.stop() == 0


def test_the_original_curl_command_verbatim(server: Server):
    """The original API's own test, on the offline engine: a job, its audio, the original
    VRAM keys, and a job counted in the metrics."""
    posted = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{server.url}/tts/synthesize",
         "-F", "text=Teste LOW VRAM", "-F", "tts_engine=espeak"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = json.loads(posted.stdout)
    assert job["status"] == "queued" and job["location"] == f"/jobs/{job['id']}"
    state = server.wait_done(job["id"])
    assert state["status"] == "done" and state["report"]["manifest"]["text"] == "Teste LOW VRAM"
    audio = server.http.get(f"/jobs/{job['id']}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(audio.content))
    assert rate > 8000 and len(samples) / rate > 0.3
    assert set(server.http.get("/vram").json()) == VRAM_KEYS
    metrics = server.http.get("/metrics").text
    assert 'voicedrop_jobs_total{code="",status="done"} 1.0' in metrics
    assert server.http.get("/models").json()["espeak"]["loads"] == 1
    assert server.http.get("/health").json()["ready"] is True


def test_wait_answers_with_the_audio_and_a_json_manifest_can_ask_for_mp3(server: Server):
    manifest = {
        "text": "A manifest by HTTP.",
        "tts": {"engine": "espeak"},
        "output": {"format": "mp3"},
    }
    got = server.http.post("/tts/synthesize", params={"wait": 30}, json=manifest)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/mpeg"
    samples, rate = sf.read(io.BytesIO(got.content))
    assert rate == 24000 or rate in (22050, 32000, 44100, 48000)
    assert len(samples) > 0
    state = server.http.get(f"/jobs/{got.headers['x-job-id']}").json()
    assert state["report"]["outputs"][0]["format"] == "mp3"


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "pcm"])
def test_openai_speech_endpoint_returns_the_audio_in_each_format(tmp_path: Path, fmt: str):
    srv = Server(tmp_path / "spool", VOICEDROP_OPENAI__VOICES__ALLOY="narrator-en")
    try:
        body = {"model": "tts-1", "input": "Hello from an OpenAI client.", "voice": "alloy",
                "response_format": fmt, "speed": 1.25}  # fmt: skip
        got = srv.http.post("/v1/audio/speech", json=body)
        assert got.status_code == 200, got.text
        if fmt == "pcm":
            assert got.headers["content-type"] == "audio/pcm"
            samples = np.frombuffer(got.content, "<i2")
            assert len(samples) / 24000 > 0.3 and np.abs(samples).max() > 100
        else:
            samples, rate = sf.read(io.BytesIO(got.content))
            assert len(samples) / rate > 0.3
        report = srv.http.get(f"/jobs/{got.headers['x-job-id']}").json()["report"]
        assert report["manifest"]["tts"]["options"] == {"rate": 206}  # 165 wpm x 1.25
    finally:
        assert srv.stop() == 0


def test_openai_errors_name_the_parameter(server: Server):
    body = {"model": "tts-1", "input": "Hello.", "voice": "nobody"}
    got = server.http.post("/v1/audio/speech", json=body)
    assert got.status_code == 400
    error = got.json()["error"]
    assert error["param"] == "voice" and "narrator-en" in error["message"]
    got = server.http.post("/v1/audio/speech", json={**body, "model": "gpt-9"})
    assert got.json()["error"]["param"] == "model"
    got = server.http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "narrator-en"})
    assert got.status_code == 400 and got.json()["error"]["param"] == "input"
    # refused by the manifest's own check: still the request's name for it, and a 400
    got = server.http.post("/v1/audio/speech", json={**body, "voice": "alloy", "input": "a\x00b"})
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert error["param"] == "input" and error["message"].startswith("input: control character")


def test_bad_requests_get_the_validators_messages(server: Server):
    bad = server.http.post("/tts/synthesize", data={"text": "x", "tts_engine": "nope"})
    assert bad.status_code == 422
    assert any(p.startswith("tts.engine") for p in bad.json()["detail"])
    assert server.http.post("/tts/synthesize", data={"tts_engine": "espeak"}).status_code == 422
    unknown = server.http.post("/tts/synthesize", data={"text": "x", "colour": "blue"})
    assert unknown.json()["detail"] == ["colour: unknown field"]
    not_json = server.http.post(
        "/tts/synthesize", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0].startswith("body: malformed JSON: Expecting property")
    assert server.http.post("/tts/synthesize", content=b"x").status_code == 415
    assert server.http.get("/jobs/no-such-job").status_code == 404
    assert server.http.get("/jobs/..%2F..%2Fetc").status_code == 404
    assert list((server.log.parent / "spool" / "inbox").glob("*.json")) == []


def test_hostile_bodies_get_422_and_the_log_stays_json(server: Server):
    """~200 KB of '[' (a 500 and a traceback once), a 5,000-digit number, a broken multipart
    body (python-multipart logs it in plain text): clear refusals, one JSON object a line."""
    json_body = {"content-type": "application/json"}
    deep = server.http.post("/tts/synthesize", content=b"[" * 200_000, headers=json_body)
    assert deep.status_code == 422 and "nested too deeply" in deep.json()["detail"][0]
    big = b'{"text": "x", "tts": {"engine": "espeak"}, "id": ' + b"9" * 5000 + b"}"
    assert server.http.post("/tts/synthesize", content=big, headers=json_body).status_code == 422
    speech = server.http.post("/v1/audio/speech", content=b"[" * 200_000, headers=json_body)
    assert speech.status_code in (400, 422) and speech.json()["error"]["message"]
    for body, why in [  # read as strictly as a manifest, and said so
        (b'{"model": "tts-1", "input": "Hi.", "voice": "alloy", "speed": NaN}', "NaN is not"),
        (b'{"model": "tts-1", "input": "Hi.", "input": "Bye.", "voice": "alloy"}', "twice"),
    ]:
        refused = server.http.post("/v1/audio/speech", content=body, headers=json_body)
        assert refused.status_code == 422 and why in refused.json()["error"]["message"]
    broken = server.http.post(
        "/tts/synthesize",
        content=b"--xyz\r\nContent-Disposition: form-data; name=text\r\n\r\nhi\r\n--bogus",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code in (400, 422)
    assert server.http.get("/health").status_code == 200  # alive
    lines = server.log.read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)  # every line is JSON
    assert list((server.log.parent / "spool" / "inbox").glob("*.json")) == []


def test_an_uploaded_reference_is_checked_and_never_used_as_a_path(tmp_path: Path):
    spool = tmp_path / "spool"
    srv = Server(spool, VOICEDROP_LIMITS__MAX_REFERENCE_BYTES="200000")
    try:
        wav = io.BytesIO()
        t = np.arange(2 * 16000) / 16000
        sf.write(wav, 0.3 * np.sin(2 * np.pi * 200 * t), 16000, format="WAV")
        hostile = "../../../../tmp/voicedrop-escape.wav"
        fields = {"text": "Cloned?", "tts_engine": "noop", "reference_text": "hello"}
        got = srv.http.post(
            "/tts/synthesize", data=fields, files={"reference": (hostile, wav.getvalue())}
        )
        assert got.status_code == 202, got.text
        report = srv.wait_done(got.json()["id"])["report"]
        voice = report["manifest"]["tts"]["voice"]  # our own name, in the job's folder
        assert voice.startswith("refs/") and voice.endswith("-reference.wav") and ".." not in voice
        assert not Path("/tmp/voicedrop-escape.wav").exists()
        assert list((spool / "inbox" / "refs").iterdir()) == []  # the job's copy is gone
        noise = srv.http.post(
            "/tts/synthesize", data=fields, files={"reference": ("a.wav", b"not audio" * 50)}
        )
        assert noise.json()["detail"] == ["reference: not an audio file soundfile can read"]
        big = srv.http.post(
            "/tts/synthesize", data=fields, files={"reference": ("a.wav", b"\0" * 600_000)}
        )
        assert big.status_code == 413
        short = io.BytesIO()
        sf.write(short, np.zeros(800), 16000, format="WAV")
        brief = srv.http.post(
            "/tts/synthesize", data=fields, files={"reference": ("a.wav", short.getvalue())}
        )
        assert brief.status_code == 422 and "must last" in brief.json()["detail"][0]
        assert sorted(p.name for p in (spool / "inbox").iterdir()) == [".incoming", "refs"]
        assert list((spool / "inbox" / ".incoming").iterdir()) == []
    finally:
        assert srv.stop() == 0


def test_the_api_page_works_with_no_internet(server: Server):
    """/docs names only files this server serves: a daemon on an offline network has it."""
    page = server.http.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/") for a in assets), assets
    for asset in assets:
        served = server.http.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert "swagger-ui" in server.http.get("/docs/swagger-ui-bundle.js").text[:2000].lower()


def test_a_queued_job_can_be_cancelled_and_a_started_one_cannot(server: Server):
    # the first runs long enough that the second is still waiting when it is cancelled, on
    # a machine as busy as CI's
    slow = {"text": "slow", "tts": {"engine": "noop", "options": {"work_s": 10}}}
    first = server.http.post("/tts/synthesize", json=slow).json()["id"]
    second = server.http.post("/tts/synthesize", json={**slow, "text": "never"}).json()["id"]
    deadline = time.monotonic() + 60
    while server.http.get(f"/jobs/{first}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.http.delete(f"/jobs/{first}").status_code == 409
    cancelled = server.http.delete(f"/jobs/{second}")
    assert cancelled.status_code == 200
    assert cancelled.json()["report"]["error"]["code"] == "cancelled"
    assert server.wait_done(first, timeout=120)["status"] == "done"
    assert server.http.get(f"/jobs/{second}").json()["status"] == "failed"
    assert server.http.delete("/jobs/nobody").status_code == 404
    spool = server.log.parent / "spool"
    assert (spool / "failed" / second / "report.json").exists()
    assert not (spool / "outbox" / second).exists()


def test_serve_alone_queues_until_full_refuses_a_wait_and_is_not_ready_without_daemon(
    tmp_path: Path,
):
    srv = Server(tmp_path / "spool", "serve", VOICEDROP_HTTP__MAX_QUEUE="2")
    try:
        job = {"text": "waits", "tts": {"engine": "espeak"}}
        ids = [srv.http.post("/tts/synthesize", json=job).json()["id"] for _ in range(2)]
        assert all(srv.http.get(f"/jobs/{i}").json()["status"] == "queued" for i in ids)
        full = srv.http.post("/tts/synthesize", json=job)
        assert full.status_code == 429 and full.headers["retry-after"] == "30"
        waited = srv.http.post("/tts/synthesize?wait=30", json=job)  # nobody would run it
        assert waited.status_code == 503 and "daemon" in waited.json()["detail"][0]
        health = srv.http.get("/health")
        assert health.status_code == 503 and health.json()["daemon"] == "not running"
        assert 'voicedrop_queue_jobs{folder="inbox"} 2.0' in srv.http.get("/metrics").text
    finally:
        assert srv.stop() == 0


def test_beyond_loopback_a_token_is_required(tmp_path: Path):
    spool = tmp_path / "spool"
    refused = subprocess.run(
        [sys.executable, "-m", "voicedrop", "serve", "--http", f"0.0.0.0:{free_port()}"],
        env=env_for(spool), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "http.token" in refused.stderr
    srv = Server(spool, "serve", host="0.0.0.0", VOICEDROP_HTTP__TOKEN=TOKEN)
    try:
        anonymous = httpx.get(f"{srv.url}/vram")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        wrong = httpx.get(f"{srv.url}/vram", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert httpx.get(f"{srv.url}/openapi.json").status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code in (200, 503)  # open to probes
        assert srv.http.get("/vram").status_code == 200
        assert "/v1/audio/speech" in srv.http.get("/openapi.json").json()["paths"]
    finally:
        assert srv.stop() == 0


def test_metrics_for_the_textfile_collector_without_http(tmp_path: Path):
    spool = tmp_path / "spool"
    textfile = tmp_path / "voicedrop.prom"
    env = env_for(spool, VOICEDROP_METRICS__TEXTFILE=str(textfile),
                  VOICEDROP_METRICS__INTERVAL_S="0.1")  # fmt: skip
    (spool / "inbox").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[2] / "sample_inbox" / "hello-en.json", spool / "inbox")
    done = subprocess.run(
        [sys.executable, "-m", "voicedrop", "run", "--once"], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = textfile.read_text()
    assert 'voicedrop_jobs_total{code="",status="done"} 1.0' in text
    assert 'voicedrop_queue_jobs{folder="outbox"} 1.0' in text
