"""OpenAI's speech API as its clients use it: the real `openai` package against a real
`voicedrop run --http` (or `serve`): audio that streams while the job is made, in every
format, server-sent events, quick honest failures, the names it may use."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from tests.system.test_daemon import Daemon
from tests.system.test_http import TOKEN, Server
from voicedrop.spool.status import STALE_S

pytestmark = pytest.mark.system
TEXT = "Hello from an OpenAI client. It streams a sentence at a time. The last one ends here."


def client(srv: Server, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=TOKEN, **options)


def seconds_of(fmt: str, data: bytes) -> float:
    if fmt == "pcm":
        return len(data) / 2 / 24000
    if fmt in ("wav", "flac"):
        info = sf.info(io.BytesIO(data))
        return info.frames / info.samplerate
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Server:
    srv = Server(tmp_path_factory.mktemp("speech") / "spool")
    yield srv
    assert srv.stop() == 0


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_the_openai_client_gets_every_format_it_asks_for(speech: Server, fmt: str):
    with client(speech).audio.speech.with_streaming_response.create(
        model="tts-1", voice="shimmer", input=TEXT, response_format=fmt
    ) as response:
        job_id = response.headers["x-job-id"]
        data = b"".join(response.iter_bytes())
    report = speech.http.get(f"/jobs/{job_id}").json()["report"]
    assert report["status"] == "done"  # the response ends when the job is done
    written = report["outputs"][0]["duration_s"]
    assert seconds_of(fmt, data) == pytest.approx(written, abs=0.1)  # codec padding


def test_events_carry_the_audio_and_end_with_done(speech: Server):
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm",
            "stream_format": "sse"}  # fmt: skip
    with speech.http.stream("POST", "/v1/audio/speech", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")
        ]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and [e["type"] for e in events][-1] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(pcm) / 2 / 24000 > 2.0


def test_audio_arrives_while_the_job_is_still_being_made(tmp_path: Path):
    """noop spends work_s over the text's sentences: the first sentence's audio comes
    about 2 s in, the job ends about 4 s later, and the listener has the first by then."""
    srv = Server(tmp_path / "spool", VOICEDROP_ENGINES__NOOP__WORK_S="6")
    try:
        body = {"model": "noop", "voice": "alloy", "input": "One. Two. Three.",
                "response_format": "pcm"}  # fmt: skip
        with srv.http.stream("POST", "/v1/audio/speech", json=body) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            job = f"/jobs/{response.headers['x-job-id']}"
            state = srv.http.get(job).json()
            rest = b"".join(chunks)
        assert first and state["status"] == "running"
        written = srv.http.get(job).json()["report"]["outputs"][0]["duration_s"]
        assert len(first + rest) / 2 / 24000 == pytest.approx(written, abs=0.001)
    finally:
        assert srv.stop() == 0


def test_a_response_received_leaves_its_report_not_its_audio(speech: Server):
    """About 10 MB a minute of speech would stay in the outbox for a day: once the client
    has the audio, only the report is kept; the file is then 410 Gone."""
    with client(speech).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="mp3"
    ) as response:
        job_id = response.headers["x-job-id"]
        heard = b"".join(response.iter_bytes())
    assert seconds_of("mp3", heard) > 1.0
    folder = speech.log.parent / "spool" / "outbox" / job_id
    assert [p.name for p in folder.iterdir()] == ["report.json"]
    assert speech.http.get(f"/jobs/{job_id}").json()["report"]["outputs"]
    gone = speech.http.get(f"/jobs/{job_id}/audio")
    assert gone.status_code == 410 and "keep_sent_audio" in gone.json()["detail"][0]


def test_a_client_that_goes_away_mid_response_leaves_no_audio_behind(tmp_path: Path):
    srv = Server(tmp_path / "spool", VOICEDROP_ENGINES__NOOP__WORK_S="4")
    try:
        body = {"model": "noop", "voice": "alloy", "input": "One. Two. Three.",
                "response_format": "pcm"}  # fmt: skip
        with srv.http.stream("POST", "/v1/audio/speech", json=body) as response:
            job_id = response.headers["x-job-id"]
            next(response.iter_raw())  # the first sentence, then the client hangs up
        state = srv.wait_done(job_id)
        assert state["status"] == "done" and state["report"]["outputs"]
        folder = tmp_path / "spool" / "outbox" / job_id
        assert [p.name for p in folder.iterdir()] == ["report.json"]
    finally:
        assert srv.stop() == 0


def test_without_a_daemon_the_answer_is_a_quick_503_and_nothing_is_queued(tmp_path: Path):
    srv = Server(tmp_path / "spool", "serve")
    try:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as refused:
            client(srv).audio.speech.create(model="tts-1", voice="alloy", input="Anyone?")
        assert time.monotonic() - started < 30  # its retries' backoff, not a queue's wait
        assert refused.value.status_code == 503
        assert refused.value.response.headers["retry-after"]
        assert "daemon" in refused.value.body["message"]
        assert not list((tmp_path / "spool" / "inbox").glob("*.json"))
    finally:
        assert srv.stop() == 0


def test_a_frozen_daemon_gets_no_request_a_quick_503_instead(tmp_path: Path):
    """The daemon stopped (SIGSTOP) while `serve` answers: its status file ages, and once
    it is stale (three missed heartbeats, made older here rather than waited for: the
    stopped daemon cannot write it), a request is refused at once and nothing is queued.
    Let go again, the daemon beats and takes requests."""
    spool = tmp_path / "spool"
    daemon = Daemon(spool)
    srv = Server(spool, "serve")
    try:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        status = spool / "state" / "status.json"
        stale = json.loads(status.read_text())
        stale["updated"] = (datetime.now(UTC) - timedelta(seconds=STALE_S + 5)).isoformat()
        status.write_text(json.dumps(stale))
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as refused:
            client(srv, max_retries=0, timeout=60).audio.speech.create(
                model="tts-1", voice="alloy", input="Anyone?"
            )
        assert time.monotonic() - started < 10  # not the client's timeout
        assert refused.value.status_code == 503
        assert "has not answered for" in refused.value.body["message"]
        assert not list((spool / "inbox").glob("*.json"))
        os.kill(daemon.proc.pid, signal.SIGCONT)
        daemon.wait_for(lambda: srv.http.get("/health").json()["ready"], "a fresh heartbeat")
        heard = client(srv).audio.speech.create(
            model="tts-1", voice="alloy", input="Back.", response_format="wav"
        )
        assert sf.info(io.BytesIO(heard.content)).frames > 0
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
        assert srv.stop() == 0
        assert daemon.stop() == 0


def test_a_request_sent_again_with_its_idempotency_key_is_one_job(speech: Server):
    key = {"Idempotency-Key": "retry-me-7"}
    body = {"model": "tts-1", "voice": "alloy", "input": "Once.", "response_format": "wav"}
    first = speech.http.post("/v1/audio/speech", json=body, headers=key)
    again = speech.http.post("/v1/audio/speech", json=body, headers=key)
    other = speech.http.post("/v1/audio/speech", json=body)
    assert first.headers["x-job-id"] == again.headers["x-job-id"] != other.headers["x-job-id"]
    heard, again_heard = (sf.read(io.BytesIO(r.content), dtype="int16")[0] for r in (first, again))
    assert len(heard) == len(again_heard)  # live, then from the output: the same audio
    assert np.abs(heard.astype(int) - again_heard.astype(int)).max() <= 4
    outbox = speech.log.parent / "spool" / "outbox"
    assert len([d for d in outbox.iterdir() if d.name == first.headers["x-job-id"]]) == 1


def test_a_client_that_gives_up_before_its_job_starts_withdraws_it(tmp_path: Path):
    srv = Server(tmp_path / "spool")
    try:
        # long enough to outlast the client's 1 s and its withdrawal on a busy machine
        slow = {"text": "Busy.", "tts": {"engine": "noop", "options": {"work_s": 15}}}
        busy = srv.http.post("/tts/synthesize", json=slow).json()["id"]
        deadline = time.monotonic() + 30
        while srv.http.get(f"/jobs/{busy}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = {"model": "tts-1", "voice": "alloy", "input": "Never mind."}
        with pytest.raises(openai.APITimeoutError):
            client(srv, timeout=1.0, max_retries=0).audio.speech.create(**body)
        spool = tmp_path / "spool"
        deadline = time.monotonic() + 30
        while not list((spool / "failed").glob("speech-*/report.json")):
            assert time.monotonic() < deadline, srv.log.read_text()[-2000:]
            time.sleep(0.05)
        report = json.loads(next((spool / "failed").glob("speech-*/report.json")).read_text())
        assert report["error"]["code"] == "cancelled"
        assert srv.wait_done(busy, timeout=120)["status"] == "done"
        assert not list((spool / "outbox").glob("speech-*"))  # it never ran for nobody
    finally:
        assert srv.stop() == 0


def test_work_ahead_longer_than_the_client_waits_is_a_429_with_an_honest_retry_after(
    tmp_path: Path,
):
    """The pace comes from a finished job (noop: 1 s for 10 characters); a long job runs
    and ten long ones wait ahead at a higher priority: about 300 s of work. A client that
    waits 20 s is told at once (429, Retry-After: the time until what is ahead would fit
    its wait, past what the SDK retries: not retried), and nothing is queued for it."""
    srv = Server(tmp_path / "spool")
    spool = tmp_path / "spool"
    try:
        paced = {"text": "0123456789", "tts": {"engine": "noop", "options": {"work_s": 1}}}
        srv.http.post("/tts/synthesize?wait=60", json=paced)
        busy = {"text": "Busy.", "tts": {"engine": "noop", "options": {"work_s": 10}},
                "priority": 100}  # fmt: skip
        running = srv.http.post("/tts/synthesize", json=busy).json()["id"]
        deadline = time.monotonic() + 30
        while srv.http.get(f"/jobs/{running}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ahead = {"text": "A long line. " * 23, "tts": {"engine": "noop"}, "priority": 60}
        for _ in range(10):
            assert srv.http.post("/tts/synthesize", json=ahead).status_code == 202
        queued = len(list((spool / "inbox").glob("*.json")))
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as refused:
            client(srv, timeout=20.0).audio.speech.create(
                model="tts-1", voice="alloy", input="Can I go first?"
            )
        assert time.monotonic() - started < 10  # no retry waited out
        retry_after = int(refused.value.response.headers["retry-after"])
        assert 200 < retry_after < 400, retry_after  # ~300 s ahead, less the 20 it can wait
        assert refused.value.response.headers["x-should-retry"] == "false"
        assert "can wait 20 s" in refused.value.body["message"]
        assert len(list((spool / "inbox").glob("*.json"))) == queued
    finally:
        assert srv.stop() == 0


def test_the_servers_own_warm_up_request_is_checked_and_never_queued(speech: Server):
    """The server walks the speech route once as it starts (its first real request is then
    as quick as the next): a request so marked is checked as a job and never dropped."""
    body = {"model": "tts-1", "voice": "alloy", "input": "Warm up."}
    inbox = speech.log.parent / "spool" / "inbox"
    before = sorted(p.name for p in inbox.glob("*.json"))
    warm = speech.http.post("/v1/audio/speech", json=body, headers={"X-Voicedrop-Warmup": "1"})
    bad = speech.http.post(
        "/v1/audio/speech", json={**body, "voice": "nobody"}, headers={"X-Voicedrop-Warmup": "1"}
    )
    assert warm.status_code == 204 and bad.status_code == 400
    assert sorted(p.name for p in inbox.glob("*.json")) == before
    assert not any((inbox / ".incoming").iterdir())


def test_the_names_a_client_may_use(speech: Server):
    models = client(speech).models.list()
    listed = {m.id for m in models.data}
    assert {"tts-1", "tts-1-hd", "espeak"} <= listed and "noop" not in listed  # a drill engine
    voices = speech.http.get("/v1/audio/voices").json()["voices"]
    assert {v["engine"] for v in voices} == {"espeak"}
    espeak = {v["id"]: v["voice"] for v in voices if v["engine"] == "espeak"}
    openai_names = ["alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                    "shimmer", "verse"]  # fmt: skip
    assert all(espeak[n] == "narrator-en" for n in openai_names)  # the first configured voice
    assert espeak["narradora-pt"] == "narradora-pt"
    said = speech.http.post(
        "/v1/audio/speech",
        json={
            "model": "espeak",
            "voice": "narradora-pt",
            "input": "Olá.",
            "response_format": "aac",
            "instructions": "Speak warmly.",
        },
    )
    assert said.status_code == 200 and seconds_of("aac", said.content) > 0.3


def test_every_v1_error_is_in_openais_shape(tmp_path: Path):
    srv = Server(tmp_path / "spool", host="0.0.0.0", VOICEDROP_HTTP__TOKEN=TOKEN)
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{srv.url}/v1", api_key="wrong").models.list()
        with pytest.raises(openai.NotFoundError) as unknown:
            client(srv).audio.speech.create(model="gpt-9", voice="alloy", input="Hi.")
        assert unknown.value.body["param"] == "model"
        for method, path, kwargs, status in (
            ("GET", "/v1/nothing", {}, 404),
            ("POST", "/v1/audio/speech", {"content": b"{not json"}, 422),
            ("POST", "/v1/audio/speech", {"json": {"model": "tts-1", "voice": "alloy"}}, 400),
        ):
            got = srv.http.request(method, path, **kwargs)
            error = got.json()["error"]
            assert got.status_code == status and error["message"] and "type" in error
        huge = httpx.post(
            f"{srv.url}/v1/audio/speech",
            content=b"x" * (60 * 1024 * 1024),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert huge.status_code == 413 and "error" in huge.json()
    finally:
        assert srv.stop() == 0


def test_a_followed_job_streams_as_it_is_made_and_after_it_is_done(speech: Server):
    job = {"segments": [{"id": "a", "text": "First part."}, {"id": "b", "text": "Second."}],
           "tts": {"engine": "espeak"}}  # fmt: skip
    job_id = speech.http.post("/tts/synthesize", json=job).json()["id"]
    live = speech.http.get(f"/jobs/{job_id}/stream", params={"format": "wav"})
    assert live.status_code == 200 and live.headers["x-job-id"] == job_id
    done = speech.http.get(f"/jobs/{job_id}/stream", params={"format": "wav"})
    report = speech.http.get(f"/jobs/{job_id}").json()["report"]
    total = sum(o["duration_s"] for o in report["outputs"])
    for response in (live, done):
        samples, rate = sf.read(io.BytesIO(response.content))
        assert len(samples) / rate == pytest.approx(total, abs=0.01)
        assert np.abs(samples).max() > 0.01


def srt(cues: int, seconds: float) -> str:
    def at(t: float) -> str:
        return f"00:{int(t // 60):02d}:{t % 60:06.3f}".replace(".", ",")

    return "\n".join(
        f"{i}\n{at(i * seconds)} --> {at(i * seconds + seconds * 0.9)}\nLine {i}.\n"
        for i in range(1, cues + 1)
    )


def test_a_request_behind_a_long_script_job_is_heard_within_one_cue(tmp_path: Path):
    """A 100-cue script job is running; a speech request arrives: the script steps aside
    after the cue it is making, the request runs, and the script then goes on."""
    spool = tmp_path / "spool"
    srv = Server(spool)
    try:
        (spool / "inbox").mkdir(parents=True, exist_ok=True)
        (spool / "inbox" / "episode.srt").write_text(srt(100, 1.0))
        # work_s is the job's, shared among its cues: 0.1 s a cue
        script = {"script": "episode.srt", "tts": {"engine": "noop", "options": {"work_s": 10}}}
        (tmp_path / "episode.json").write_text(json.dumps(script))
        (tmp_path / "episode.json").rename(spool / "inbox" / "episode.json")  # the drop folder
        job_id = "episode"
        deadline, made = time.monotonic() + 60, 0
        while made < 5:  # it is well under way (its stage is told at most every 0.25 s)
            assert time.monotonic() < deadline, srv.log.read_text()[-2000:]
            stage = re.match(r"tts (\d+)/", srv.http.get(f"/jobs/{job_id}").json()["stage"] or "")
            made = int(stage.group(1)) if stage else 0
            time.sleep(0.02)
        body = {"model": "tts-1", "voice": "alloy", "input": "Me first.", "response_format": "pcm"}
        with srv.http.stream("POST", "/v1/audio/speech", json=body) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            behind = srv.http.get(f"/jobs/{job_id}").json()
            b"".join(chunks)
        assert first and behind["status"] == "running"
        report = srv.wait_done(job_id, timeout=120)["report"]
        assert report["status"] == "done" and report["attempt"] == 1
        [pause] = report["paused"]
        assert made <= pause["after"] < 100 and pause["of"] == 100  # mid-job (the unit tests
        # show it steps aside right after the cue it is making: tests/unit/test_priority.py)
        assert len(report["outputs"]) == 101  # every clip, and the dub track
    finally:
        assert srv.stop() == 0
