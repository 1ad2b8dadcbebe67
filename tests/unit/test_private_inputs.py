"""A job's private inputs (`inbox/refs/`: what `submit`, the HTTP side and the hot folders
stage for one job) are the job's from its claim, for every attempt: a retry after a
transient error, a restart after a kill, a step aside. They end with the job, in failed/
when it fails or is cancelled, and nothing is left behind in refs/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.conftest import drop, make_settings, read_report, unit_service
from tests.unit.test_executor import hungry_service, run_all
from voicedrop.api.desk import Desk
from voicedrop.client import submit
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.plan import Planner
from voicedrop.testing import ManualClock

SRT = "".join(f"{i}\n00:00:0{i},000 --> 00:00:0{i},800\nLine {i}.\n\n" for i in range(1, 6))


def stage_script(inbox: Path, name: str = "abcd1234-ep.srt") -> str:
    (inbox / "refs").mkdir(parents=True, exist_ok=True)
    (inbox / "refs" / name).write_text(SRT)
    return f"refs/{name}"


def refs_left(inbox: Path) -> list[str]:
    return sorted(p.name for p in (inbox / "refs").iterdir())


def test_a_script_job_retried_after_a_transient_error_finds_its_private_script(settings):
    """Its first attempt removed the staged script once copied; the retry looked for it in
    the inbox again and failed for good: `script file 'refs/…srt' not found`."""
    clock = ManualClock(1000.0)
    svc, _ = hungry_service(settings, ooms=2, clock=clock)  # the first attempt runs out
    inbox = svc.spool.inbox
    drop(inbox, "ep.json", {"script": stage_script(inbox), "tts": {"engine": "hungry"}})
    [first] = run_all(svc)
    assert first.error is not None and first.error.kind == "transient"
    clock.now += settings.limits.retry_delay_s
    [second] = run_all(svc)
    assert second.status == "done", second.error
    saved = read_report(svc.spool.outbox / "ep")
    assert saved["script"]["cues"] == 5 and saved["attempt"] == 2
    assert refs_left(inbox) == [] and list(svc.spool.work.iterdir()) == []


def test_a_job_killed_after_its_inputs_were_taken_runs_again_with_them(settings):
    """A daemon killed mid-job: the next one recovers the job from work/ and its private
    reference and script are there, in the job, not in the inbox any more."""
    first = unit_service(settings)
    inbox = first.spool.inbox
    drop(inbox, "ep.json", {"script": stage_script(inbox), "tts": {"engine": "espeak"}})
    [item] = first.spool.scan_inbox()
    claimed = first.spool.claim(item)
    assert claimed is not None
    attempt = first.attempts.begin(claimed)
    first.attempts.prepare(attempt)  # the inputs are the job's now …
    assert refs_left(inbox) == []
    first.spool.leases.release(claimed.job_id)  # … and then the daemon is killed
    second = unit_service(settings)
    [report] = run_all(second)
    assert report.status == "done" and report.attempt == 2, report.error
    assert read_report(second.spool.outbox / "ep")["script"]["cues"] == 5


def test_a_failed_job_keeps_its_private_inputs_in_failed(settings):
    service = unit_service(settings)
    inbox = service.spool.inbox
    script = stage_script(inbox)
    drop(inbox, "ep.json", {"script": script, "tts": {"engine": "nope"}})
    [report] = run_all(service)
    assert report.status == "failed" and report.error.field == "tts.engine"
    assert (service.spool.failed / "ep" / "inputs" / "abcd1234-ep.srt").read_text() == SRT
    assert refs_left(inbox) == []


def test_a_duplicate_keeps_nothing_in_refs(settings):
    service = unit_service(settings)
    inbox = service.spool.inbox
    drop(inbox, "a.json", {"id": "same", "text": "Hi.", "tts": {"engine": "espeak"}})
    run_all(service)
    script = stage_script(inbox)
    drop(inbox, "b.json", {"id": "same", "script": script, "tts": {"engine": "espeak"}})
    [report] = run_all(service)
    assert report.duplicate_of == "a" and refs_left(inbox) == []


def test_a_cancelled_script_job_keeps_its_script_with_it(tmp_path):
    """Cancelling a queued job removed its private reference but forgot its script, left
    in refs/ for ever; now both go with the job into failed/."""
    settings = make_settings(tmp_path)
    planner = Planner(settings, build_engines(settings))
    desk = Desk(lambda: (settings, planner))
    source = tmp_path / "work-folder"
    source.mkdir()
    (source / "ep.srt").write_text(SRT)
    (source / "ep.json").write_text(json.dumps({"script": "ep.srt", "tts": {"engine": "espeak"}}))
    job_id = submit(settings, planner, source / "ep.json")
    assert isinstance(job_id, str) and len(refs_left(desk.spool.inbox)) == 1
    cancelled = desk.cancel(job_id)
    assert cancelled.status == "failed" and refs_left(desk.spool.inbox) == []
    [kept] = (desk.spool.failed / job_id / "inputs").iterdir()
    assert kept.read_text() == SRT


def test_a_retry_waiting_across_a_restart_keeps_its_earlier_errors(settings):
    """The errors of earlier attempts lived in the daemon's memory: a restart during the
    back-off lost them from the final report's previous_errors."""
    clock = ManualClock(1000.0)
    svc, _ = hungry_service(settings, ooms=2, clock=clock)
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    [first] = run_all(svc)
    assert first.error is not None and first.error.code == "out_of_memory"
    svc.spool.leases.release("j")  # the daemon stops while j waits for its retry
    again, _ = hungry_service(settings, ooms=0)
    [report] = run_all(again)
    assert report.status == "done" and report.attempt == 2
    assert [e.code for e in report.previous_errors] == ["out_of_memory"]


def test_a_private_input_nothing_names_becomes_a_failed_job_that_keeps_it(settings):
    """A producer killed between staging its script and dropping its manifest (or a hot-
    folder file an older version lost on a full disk) sat in refs/ for ever, unseen."""
    service = unit_service(settings)
    inbox = service.spool.inbox
    orphan = inbox / stage_script(inbox, "abcd1234-lost.srt")
    named = stage_script(inbox, "abcd1234-named.srt")
    young = inbox / stage_script(inbox, "abcd1234-young.srt")  # a submit still under way
    drop(inbox, "named.json", {"script": named, "tts": {"engine": "espeak"}})
    os.mkfifo(inbox / "pipe.json")  # read without blocking, as the intake reads: skipped
    old = time.time() - settings.watcher.reference_wait_s - 60
    for path in (orphan, inbox / named):
        os.utime(path, (old, old))
    with service:
        pass
    report = read_report(service.spool.failed / "lost")
    assert (
        report["error"]["code"] == "orphaned_input"
        and "refs/abcd1234-lost.srt" in (report["error"]["message"])
    )
    assert (service.spool.failed / "lost" / "inputs" / orphan.name).read_text() == SRT
    assert refs_left(inbox) == ["abcd1234-named.srt", "abcd1234-young.srt"]
    assert young.exists()
