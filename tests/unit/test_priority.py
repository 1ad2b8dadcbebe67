"""Priority: a job someone waits for goes before queued work, and a job with many segments
steps aside between two of them for it — without losing, redoing or starving anything."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from tests.conftest import drop, hello, make_settings, read_report, unit_service
from voicedrop.codecs import to_int16
from voicedrop.daemon.attempt import SteppedAside
from voicedrop.daemon.listeners import Listener
from voicedrop.testing import ManualClock

SEGMENTS = [{"id": f"s{i}", "text": f"This is segment number {i}."} for i in range(1, 6)]


def batch(**extra):
    job = hello(segments=SEGMENTS, **extra)
    del job["text"]
    return job


class DropWhen(Listener):
    """Drops a manifest into the inbox (once) when a job reaches a stage, as a client would."""

    def __init__(self, inbox, stage: str, name: str, manifest: dict | None) -> None:
        self.inbox, self.when, self.name, self.manifest = inbox, stage, name, manifest
        self.stages: list[tuple[str, str]] = []

    def stage(self, job_id: str, stage: str) -> None:
        self.stages.append((job_id, stage))
        if stage == self.when and self.manifest is not None:
            drop(self.inbox, self.name, self.manifest)
            self.manifest = None


def test_the_newest_job_goes_first_when_its_priority_is_higher(service):
    drop(service.spool.inbox, "a.json", hello())
    drop(service.spool.inbox, "b.json", hello())
    drop(service.spool.inbox, "c.json", hello(priority=50))
    order = [service.executor.step().job_id for _ in range(3)]
    assert order == ["c", "a", "b"]


def test_a_long_job_steps_aside_between_segments_and_comes_back_where_it_was(settings):
    service = unit_service(settings)
    spy = DropWhen(service.spool.inbox, "tts 3/5", "urgent.json", hello(priority=50))
    service.events.add(spy)
    drop(service.spool.inbox, "long.json", batch())
    aside = service.executor.step()
    assert isinstance(aside, SteppedAside) and len(aside.made) == 3
    assert service.executor.step().job_id == "urgent"
    report = service.executor.step()
    assert report.job_id == "long" and report.status == "done" and report.attempt == 1
    assert [(p.after, p.of) for p in report.paused] == [(3, 5)]
    made = [stage for job, stage in spy.stages if job == "long" and stage.startswith("tts ")]
    assert made == ["tts 1/5", "tts 2/5", "tts 3/5", "tts 4/5", "tts 5/5"]  # none twice
    for take in aside.made:  # what it made before it stepped aside is what it delivered
        written = sf.read(str(service.spool.outbox / "long" / f"speech-{take.segment}.wav"))[0]
        made = np.frombuffer(to_int16(take.audio.samples), "<i2").astype(int)
        assert len(made) == len(written)
        assert (made == np.round(written * 32768)).all()


def test_a_long_job_steps_aside_between_its_clips_too_and_converts_nothing_twice(tmp_path):
    """A request that comes while a long job writes its clips (the post stage: loudness,
    encoding, for every cue) goes first, between two clips; the job comes back and makes
    no segment and converts no take again: its clips are the takes it had converted."""
    settings = make_settings(tmp_path)
    service = unit_service(settings)
    spy = DropWhen(service.spool.inbox, "post 2/5", "urgent.json", hello(priority=50))
    service.events.add(spy)
    converted = batch(convert={"engine": "tape", "model": "chipmunk", "pitch": 7})
    drop(service.spool.inbox, "long.json", converted)
    aside = service.executor.step()
    assert isinstance(aside, SteppedAside) and len(aside.made) == 5
    assert service.executor.step().job_id == "urgent"
    report = service.executor.step()
    assert report.job_id == "long" and report.status == "done" and report.attempt == 1
    assert [(p.after, p.of) for p in report.paused] == [(5, 5)]
    made = [stage for job, stage in spy.stages if job == "long" and stage.startswith("tts ")]
    assert made == [f"tts {i}/5" for i in range(1, 6)]  # none twice
    for take in aside.made:  # converted once, before it stepped aside: what it delivered
        written = sf.read(str(service.spool.outbox / "long" / f"speech-{take.segment}.wav"))[0]
        kept = np.frombuffer(to_int16(take.audio.samples), "<i2").astype(int)
        assert len(kept) == len(written)  # converted again, it would be shorter by a third
        assert np.abs(kept - np.round(written * 32768)).max() <= 1


def test_a_job_of_the_same_priority_waits_its_turn(settings):
    service = unit_service(settings)
    service.events.add(DropWhen(service.spool.inbox, "tts 2/5", "next.json", hello()))
    drop(service.spool.inbox, "long.json", batch())
    assert service.executor.step().job_id == "long"
    assert read_report(service.spool.outbox / "long")["paused"] == []


def test_a_job_that_stepped_aside_waits_at_most_max_wait_s(tmp_path):
    clock = ManualClock()
    settings = make_settings(tmp_path, scheduler={"max_wait_s": 30.0})
    service = unit_service(settings, clock=clock)
    service.events.add(DropWhen(service.spool.inbox, "tts 2/5", "u1.json", hello(priority=9)))
    drop(service.spool.inbox, "long.json", batch())
    assert isinstance(service.executor.step(), SteppedAside)
    clock.now += 31.0  # the urgent jobs take long: another one is already waiting
    drop(service.spool.inbox, "u2.json", hello(priority=9))
    assert service.executor.step().job_id == "long"  # it has waited enough: it goes on
    assert service.executor.step().job_id == "u1"
