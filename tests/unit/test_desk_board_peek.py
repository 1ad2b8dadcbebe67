"""The HTTP side's view of the spool (Desk, the dashboard's snapshot) and the queue's
look at a waiting manifest (ManifestPeek), each on a real temp spool with no server."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import drop, hello, make_settings, unit_service
from voicedrop.api import board
from voicedrop.api.desk import Desk, Rejected
from voicedrop.daemon.listeners import Listener
from voicedrop.daemon.peek import ManifestPeek
from voicedrop.daemon.watcher import StabilityGate
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.plan import Planner
from voicedrop.spool.inbox import list_candidates


@pytest.fixture
def desk(settings):
    planner = Planner(settings, build_engines(settings))
    return Desk(lambda: (settings, planner))


def inbox_names(desk: Desk) -> list[str]:
    return sorted(p.name for p in desk.spool.inbox.glob("*.json"))


def test_a_submitted_job_is_queued_and_can_be_cancelled_once(desk):
    job_id = desk.submit(hello())
    assert job_id.startswith("http-") and inbox_names(desk) == [f"{job_id}.json"]
    assert desk.state(job_id).status == "queued"
    cancelled = desk.cancel(job_id)
    assert (
        cancelled.status == "failed"
        and cancelled.error is not None
        and cancelled.error.code == "cancelled"
    )
    assert inbox_names(desk) == []
    with pytest.raises(Rejected) as again:
        desk.cancel(job_id)
    assert again.value.status == 409


def test_a_manifest_that_would_fail_is_refused_naming_the_field_and_nothing_is_queued(desk):
    with pytest.raises(Rejected) as refused:
        desk.submit({"text": "hi", "tts": {"engine": "nope"}})
    assert refused.value.status == 422
    assert any("tts.engine" in line for line in refused.value.problems)
    assert inbox_names(desk) == [] and list(desk.spool.incoming.iterdir()) == []


def test_a_full_queue_is_refused_with_429(tmp_path):
    settings = make_settings(tmp_path, http={"max_queue": 2})
    planner = Planner(settings, build_engines(settings))
    desk = Desk(lambda: (settings, planner))
    desk.submit(hello())
    desk.submit(hello())
    with pytest.raises(Rejected) as full:
        desk.submit(hello())
    assert full.value.status == 429 and len(inbox_names(desk)) == 2


def test_an_unknown_job_has_no_state_and_cannot_be_cancelled(desk):
    assert desk.state("nobody") is None
    with pytest.raises(Rejected) as missing:
        desk.cancel("nobody")
    assert missing.value.status == 404


def test_the_dashboard_lists_waiting_jobs_and_says_which_one_will_fail(desk):
    drop(desk.spool.inbox, "good.json", hello(tts={"engine": "espeak", "voice": "narrator"}))
    drop(desk.spool.inbox, "bad.json", b"{not json")
    data = board.snapshot(desk, time.time())
    waiting = {w["job_id"]: w for w in data["waiting"]}
    assert waiting["good"]["engine"] == "espeak" and waiting["good"]["voice"] == "narrator"
    assert "problem" in waiting["bad"] and "problem" not in waiting["good"]
    assert data["daemon"]["state"] == "not running"
    assert "espeak" in data["choices"]["engines"]


def test_the_dashboard_shows_a_finished_job_with_its_model_moves(settings, desk):
    service = unit_service(settings)
    try:
        drop(service.spool.inbox, "j.json", hello())
        report = service.executor.step()
    finally:
        service.manager.close()
    assert report is not None and report.status == "done"
    data = board.snapshot(desk, time.time())
    assert [r["job_id"] for r in data["recent"]] == ["j"]
    marks = [m for m in data["timeline"]["events"] if m["job_id"] == "j"]
    assert len(marks) == len(report.events) > 0
    first = board.etag(data)
    assert board.etag(board.snapshot(desk, time.time() + 1)) == first, "the clock alone changed"


def peek_of(settings):
    gate = StabilityGate(settings.watcher.stable_delay_s)
    planner = Planner(settings, build_engines(settings))
    return ManifestPeek(settings, settings.spool / "inbox", gate, planner)


def only_item(settings):
    [item] = list_candidates(settings.spool / "inbox")
    return item


def test_the_peek_plans_a_waiting_manifest_once_and_knows_its_models(settings):
    peek = peek_of(settings)
    drop(settings.spool / "inbox", "j.json", hello())
    item = only_item(settings)
    seen = peek.of(item)
    assert seen.keys == {"espeak"} and [s.key for s in seen.first] == ["espeak"]
    assert peek.of(item) is seen, "planned again for an unchanged file"


def test_the_peek_forgets_the_least_recently_used_plan_not_the_newest(settings, monkeypatch):
    """Past its size the cache dropped its newest entry: the oldest stayed forever and a
    waiting manifest was read and planned again on every scan."""
    monkeypatch.setattr("voicedrop.daemon.peek.CACHED", 3)
    peek = peek_of(settings)
    inbox = settings.spool / "inbox"
    for name in ("a", "b", "c", "d"):
        drop(inbox, f"{name}.json", hello())
    items = {i.path.stem: i for i in list_candidates(inbox)}
    plans = {name: peek.of(items[name]) for name in ("a", "b", "c")}
    assert peek.of(items["a"]) is plans["a"]  # a is now the most recently used
    peek.of(items["d"])  # one too many: b, the least recently used, goes
    assert peek.of(items["a"]) is plans["a"] and peek.of(items["c"]) is plans["c"]
    assert peek.of(items["b"]) is not plans["b"], "b was kept: an entry in use was dropped"


def test_the_peek_of_an_invalid_manifest_is_empty_and_raises_nothing(settings):
    peek = peek_of(settings)
    drop(settings.spool / "inbox", "bad.json", {"text": "x", "tts": {"engine": "nope"}})
    seen = peek.of(only_item(settings))
    assert seen.keys == set() and seen.first == ()


def test_the_peek_holds_a_manifest_whose_reference_is_missing_until_the_wait_is_over(settings):
    peek = peek_of(settings)
    drop(settings.spool / "inbox", "j.json", hello(tts={"engine": "noop", "voice": "ref.wav"}))
    item = only_item(settings)
    now = time.time()
    assert peek.awaits_files(item, time.monotonic(), now)
    late = item.mtime_ns / 1e9 + settings.watcher.reference_wait_s
    assert not peek.awaits_files(item, time.monotonic(), late), "waited past reference_wait_s"
    (settings.spool / "inbox" / "ref.wav").write_bytes(b"RIFF")
    os.utime(settings.spool / "inbox" / "ref.wav", (now - 60, now - 60))  # long settled
    assert not peek.awaits_files(item, time.monotonic(), now)


class GoesAway(Listener):
    """An HTTP client that goes away while its job runs."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def stage(self, job_id: str, stage: str) -> None:
        self.desk.sent(job_id, False)


def test_audio_sent_to_its_client_is_not_kept_only_its_report(settings, desk):
    """A /v1 response sent whole: the job's audio goes at once, its report stays, the
    dashboard offers nothing to play and the file is answered 410. A client that went
    away mid-job: its audio goes when the job is committed."""
    service = unit_service(settings)
    try:
        drop(service.spool.inbox, "whole.json", hello(origin="http"))
        assert service.executor.step().status == "done"
        desk.sent("whole", True)
        service.events.add(GoesAway(desk))
        drop(service.spool.inbox, "gone.json", hello(origin="http"))
        assert service.executor.step().status == "done"
    finally:
        service.manager.close()
    for job in ("whole", "gone"):
        assert [p.name for p in (desk.spool.outbox / job).iterdir()] == ["report.json"], job
        assert desk.state(job).report.outputs, "the report still says what was made"
    recent = board.snapshot(desk, time.time())["recent"]
    assert [r["outputs"] for r in recent] == [[], []]


def test_audio_is_kept_when_configured_or_never_sent(tmp_path):
    settings = make_settings(tmp_path, http={"keep_sent_audio": True})
    planner = Planner(settings, build_engines(settings))
    desk = Desk(lambda: (settings, planner))
    service = unit_service(settings)
    try:
        for job in ("kept", "unsent"):
            drop(service.spool.inbox, f"{job}.json", hello(origin="http"))
            assert service.executor.step().status == "done"
    finally:
        service.manager.close()
    desk.sent("kept", True)
    for job in ("kept", "unsent"):
        [wav] = desk.spool.outbox.glob(f"{job}/*.wav")
        assert wav.stat().st_size > 0
