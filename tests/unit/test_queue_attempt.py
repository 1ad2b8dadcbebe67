"""The queue and the attempt built from their parts, without a Service: what runs next,
what one attempt reports, and what its listeners hear."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import WatchedIndex, drop, hello, read_report
from voicedrop import logs
from voicedrop.config import GB, Settings
from voicedrop.daemon.attempt import Attempts
from voicedrop.daemon.listeners import Listener, Listeners
from voicedrop.daemon.peek import ManifestPeek
from voicedrop.daemon.queue import JobQueue
from voicedrop.daemon.retries import RetryPolicy, SpoolBackoff
from voicedrop.daemon.scheduler import Scheduler
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobRunner
from voicedrop.report import ErrorInfo, JobReport
from voicedrop.spool.jobs import Spool
from voicedrop.testing import FakeDevice, ManualClock


class Heard(Listener):
    """Every event, in order, as (event, job id, detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def started(self, job_id: str, attempt: int) -> None:
        self.events.append(("started", job_id, attempt))

    def stage(self, job_id: str, stage: str) -> None:
        self.events.append(("stage", job_id, stage))

    def retrying(self, job_id: str, delay_s: float, error: ErrorInfo) -> None:
        self.events.append(("retrying", job_id, (delay_s, error.code)))

    def finished(self, report: JobReport) -> None:
        self.events.append(("finished", report.job_id, report.status))


@dataclass
class Parts:
    spool: Spool
    queue: JobQueue
    attempts: Attempts
    heard: Heard
    clock: ManualClock
    manager: ResidencyManager

    def run_all(self) -> list[JobReport]:
        reports = []
        while (job := self.queue.next()) is not None:
            reports.append(self.attempts.run(job))
        return reports


@pytest.fixture
def parts(settings: Settings) -> Iterator[Parts]:
    clock = ManualClock(1000.0)
    spool = Spool.from_settings(settings)
    spool.ensure()
    gate = StabilityGate(settings.watcher.stable_delay_s)
    manager = ResidencyManager.from_settings(settings, FakeDevice(8 * GB))
    runner = JobRunner(settings, build_engines(settings), manager)
    peek = ManifestPeek(settings, spool.inbox, gate, runner.planner)
    queue = JobQueue(
        spool,
        gate,
        WatchedIndex(spool.inbox),
        Scheduler(affinity=False),
        peek,
        set,
        clock,
        time.time,
        SpoolBackoff(clock),
    )
    heard = Heard()
    limits = settings.limits
    attempts = Attempts(
        limits, spool, runner, queue, RetryPolicy(limits), Listeners([heard]), clock
    )
    queue.start()
    try:
        yield Parts(spool, queue, attempts, heard, clock, manager)
    finally:
        manager.close()


def aged(path: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(path, (then, then))


def test_the_queue_gives_the_oldest_complete_manifest_first(parts):
    inbox = parts.spool.inbox
    aged(drop(inbox, "second.json", hello()), 5)
    aged(drop(inbox, "first.json", hello()), 10)
    assert [r.job_id for r in parts.run_all()] == ["first", "second"]
    assert parts.queue.next() is None


def test_a_manifest_whose_reference_has_not_arrived_stays_in_the_inbox(parts):
    manifest = hello(tts={"engine": "noop", "voice": "ref.wav"})
    drop(parts.spool.inbox, "waits.json", manifest)
    assert parts.queue.next() is None
    assert (parts.spool.inbox / "waits.json").exists(), "taken before its reference"


def test_a_job_deferred_for_a_retry_comes_back_only_when_due(parts):
    drop(parts.spool.inbox, "j.json", hello())
    job = parts.spool.begin_attempt(parts.queue.next())
    parts.queue.defer(job, 30.0)
    assert parts.queue.next() is None and parts.queue.due() == parts.clock.now + 30.0
    parts.clock.now += 30.0
    assert parts.queue.next().job_id == "j"


def test_listeners_hear_a_job_start_progress_and_finish_in_order(parts):
    drop(parts.spool.inbox, "j.json", hello())
    [report] = parts.run_all()
    assert report.status == "done"
    names = [event for event, _, _ in parts.heard.events]
    assert names[0] == "started" and names[-1] == "finished"
    assert "stage" in names, "no progress was told"
    assert all(job == "j" for _, job, _ in parts.heard.events)
    assert parts.heard.events[-1] == ("finished", "j", "done")


def test_bad_input_ends_in_failed_with_a_report_and_listeners_hear_it(parts):
    drop(parts.spool.inbox, "bad.json", b"{not json")
    [report] = parts.run_all()
    assert report.status == "failed" and report.error.code == "manifest_invalid"
    assert read_report(parts.spool.failed / "bad")["status"] == "failed"
    assert [e for e, _, _ in parts.heard.events] == ["started", "finished"]


def test_a_transient_failure_is_kept_for_a_retry_and_heard_as_retrying(parts, monkeypatch):
    import errno

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("voicedrop.pipeline.audio.write_audio", full)
    drop(parts.spool.inbox, "j.json", hello())
    [report] = parts.run_all()
    assert report.error.kind == "transient"
    assert parts.heard.events[-1][0] == "retrying"
    delay, code = parts.heard.events[-1][2]
    assert delay == parts.attempts.limits.retry_delay_s and code == report.error.code
    assert (parts.spool.work / "j").exists() and not (parts.spool.outbox / "j").exists()


def test_a_listener_that_fails_is_logged_and_the_job_still_ends(parts):
    class Broken(Listener):
        def started(self, job_id: str, attempt: int) -> None:
            raise RuntimeError("status disk gone")

    parts.attempts.events = Listeners([Broken(), parts.heard])
    drop(parts.spool.inbox, "j.json", hello())
    with capture_logs() as said:
        [report] = parts.run_all()
    assert report.status == "done"
    failed = [e for e in said if e["event"] == "listener.failed"]
    assert failed and failed[0]["listener"] == "Broken" and failed[0]["on"] == "started"
    assert "status disk gone" in failed[0]["error"]
    assert parts.heard.events[0] == ("started", "j", 1), "the next listener still heard"


def test_an_attempt_logs_its_start_and_end(parts):
    logs.configure("json", "info")
    drop(parts.spool.inbox, "j.json", hello())
    with capture_logs() as said:
        parts.run_all()
    start = next(e for e in said if e["event"] == "job.start")
    end = next(e for e in said if e["event"] == "job.end")
    assert start["job_id"] == "j" and start["attempt"] == 1 and start["source"] == "j.json"
    assert end["status"] == "done" and end["error"] is None
