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


def stepped_aside_at(settings, stage: str, manifest: dict, made: int) -> SteppedAside:
    """The long job steps aside when it reaches `stage`, the urgent one runs, the long one
    comes back and is done at its first attempt, having made no segment twice; what it had
    made when it stepped aside."""
    service = unit_service(settings)
    spy = DropWhen(service.spool.inbox, stage, "urgent.json", hello(priority=50))
    service.events.add(spy)
    drop(service.spool.inbox, "long.json", manifest)
    aside = service.executor.step()
    assert isinstance(aside, SteppedAside) and len(aside.made) == made
    assert service.executor.step().job_id == "urgent"
    report = service.executor.step()
    assert report.job_id == "long" and report.status == "done" and report.attempt == 1
    assert [(p.after, p.of) for p in report.paused] == [(made, 5)]
    tts = [stage for job, stage in spy.stages if job == "long" and stage.startswith("tts ")]
    assert tts == [f"tts {i}/5" for i in range(1, 6)]  # none twice
    return aside


def delivered(settings, take) -> tuple[np.ndarray, np.ndarray]:
    """A take as it was made, and its clip as the job wrote it (16-bit)."""
    clip = settings.spool / "outbox" / "long" / f"speech-{take.segment}.wav"
    made = np.frombuffer(to_int16(take.audio.samples), "<i2").astype(int)
    return made, np.round(sf.read(str(clip))[0] * 32768)


def test_a_long_job_steps_aside_between_segments_and_comes_back_where_it_was(settings):
    aside = stepped_aside_at(settings, "tts 3/5", batch(), 3)
    for take in aside.made:  # what it made before it stepped aside is what it delivered
        made, written = delivered(settings, take)
        assert len(made) == len(written) and (made == written).all()


def test_a_long_job_steps_aside_between_its_clips_too_and_converts_nothing_twice(settings):
    """A request that comes while a long job writes its clips (the post stage: loudness,
    encoding, for every cue) goes first, between two clips; the job comes back and makes
    no segment and converts no take again: its clips are the takes it had converted."""
    converted = batch(convert={"engine": "tape", "model": "chipmunk", "pitch": 7})
    aside = stepped_aside_at(settings, "post 2/5", converted, 5)
    for take in aside.made:  # converted once, before it stepped aside: what it delivered
        made, written = delivered(settings, take)
        assert len(made) == len(written)  # converted again, it would be shorter by a third
        assert np.abs(made - written).max() <= 1


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
