"""A job's live stream: the audio a listener hears while the job is made is the job's audio,
it arrives a sentence at a time, it is never sent twice, and it never fails a job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from structlog.testing import capture_logs

from tests.conftest import drop, hello, read_report, unit_service
from voicedrop.manifest import Manifest
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.live import LiveAudio
from voicedrop.pipeline.runner import JobInput
from voicedrop.spool.stream import AUDIO, StreamWriter, open_stream, read_header, stream_folder

THREE = "The first sentence is here. A second one follows it. And then the third."


class Sink:
    """A PcmSink that keeps what it is given."""

    def __init__(self, held: bytes = b"") -> None:
        self.data = bytearray(held)
        self.rate: int | None = None
        self.writes = 0
        self.ended = False

    def open(self, sample_rate: int) -> int:
        self.rate = sample_rate
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    def end(self) -> None:
        self.ended = True


def run(service, tmp_path: Path, manifest: dict, sink: Sink) -> Path:
    out = tmp_path / "out"
    job = JobInput("j", Manifest.model_validate(manifest), None, out, stream=sink)
    outcome = service.runner.run(job, lambda _m: None)
    assert outcome.error is None, outcome.error
    return out


def test_the_stream_is_the_outputs_audio_a_sentence_at_a_time(settings, tmp_path):
    service = unit_service(settings)
    sink = Sink()
    out = run(service, tmp_path, hello(text=THREE, output={"sample_rate": 24000}), sink)
    written, rate = sf.read(str(out / "speech.wav"), dtype="int16")
    streamed = np.frombuffer(bytes(sink.data), "<i2")
    assert sink.writes >= 3 and sink.ended and sink.rate == rate == 24000  # a write a sentence
    assert len(streamed) == len(written)
    assert np.abs(streamed.astype(int) - written.astype(int)).max() <= 4  # resampled in pieces


def test_with_a_conversion_the_converted_takes_stream(settings, tmp_path):
    service = unit_service(settings)
    sink = Sink()
    manifest = hello(
        segments=[{"id": "a", "text": "One take."}, {"id": "b", "text": "Another take."}],
        convert={"engine": "tape", "model": "chipmunk", "pitch": 12},
    )
    del manifest["text"]
    out = run(service, tmp_path, manifest, sink)
    files = [sf.read(str(out / f"speech-{s}.wav"), dtype="int16")[0] for s in ("a", "b")]
    streamed = np.frombuffer(bytes(sink.data), "<i2")
    assert sink.writes == 2  # a take at a time: the conversion takes whole takes
    assert len(streamed) == sum(len(f) for f in files)


def test_a_stage_made_again_sends_nothing_twice():
    piece = Audio(np.linspace(-0.5, 0.5, 1000, dtype=np.float32), 24000)
    sink = Sink()
    live = LiveAudio(sink, "wav", None)
    live.restart()
    live.write(piece)  # the first run got this far, then failed (out of memory)
    live.restart()
    for _ in range(3):
        live.write(piece)
    live.end()
    assert len(sink.data) == 3 * 1000 * 2


def test_an_attempt_goes_on_with_the_stream_the_last_one_began(tmp_path):
    piece = Audio(np.full(500, 0.25, dtype=np.float32), 16000)
    first = StreamWriter(tmp_path)
    LiveAudio(first, "wav", None).write(piece)  # died here: no end
    first.close()
    second = StreamWriter(tmp_path)
    live = LiveAudio(second, "wav", None)
    live.restart()
    live.write(piece)
    live.write(piece)
    live.end()
    header = read_header(stream_folder(tmp_path))
    assert header is not None and header.complete and header.bytes == 2 * 500 * 2
    opened = open_stream(tmp_path)
    assert opened is not None and len(opened[1].read()) == 2000
    opened[1].close()


def test_a_stream_that_cannot_be_written_never_fails_the_job(settings, tmp_path):
    service = unit_service(settings)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "stream").write_text("a file where the stream folder goes")
    with capture_logs() as logs:
        out = run(service, tmp_path, hello(text=THREE), StreamWriter(job_dir))  # type: ignore[arg-type]
    assert (out / "speech.wav").exists()
    assert [e["event"] for e in logs].count("stream.write_failed") == 1


def test_a_job_run_by_the_daemon_leaves_no_stream_behind(service):
    drop(service.spool.inbox, "a.json", hello(text=THREE))
    drop(service.spool.inbox, "b.json", hello(text=THREE, tts={"engine": "nope"}))
    service.executor.step()
    service.executor.step()
    assert read_report(service.spool.outbox / "a")["status"] == "done"
    assert read_report(service.spool.failed / "b")["status"] == "failed"
    assert not list(service.spool.root.rglob(AUDIO))
    assert "stream" not in json.dumps(sorted(p.name for p in service.spool.root.rglob("*")))


def test_a_take_made_before_is_heard_from_its_start_not_once_it_is_all_sent(settings, tmp_path):
    """The same text again: its take comes whole from the clip cache. A listener hears it
    in half-second slices as it is sent, not after the whole take was resampled and sent
    (a 40-sentence request's first audio came after 80 ms instead of 20)."""
    service = unit_service(settings)
    text = " ".join(f"Sentence number {i} of a text said twice." for i in range(1, 9))
    manifest = hello(text=text, output={"sample_rate": 24000})
    first, again = Sink(), Sink()
    run(service, tmp_path / "a", manifest, first)
    run(service, tmp_path / "b", manifest, again)
    heard = np.frombuffer(bytes(again.data), "<i2")
    assert len(heard) / 24000 > 4.0 and again.ended
    assert again.writes >= len(heard) / 24000 / 0.5  # in slices of at most half a second
    assert np.abs(heard.astype(int) - np.frombuffer(bytes(first.data), "<i2")).max() <= 4
