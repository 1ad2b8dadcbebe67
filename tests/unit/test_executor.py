"""The executor through `step()`: reports, bad input, duplicates, recovery, the OOM ladder.

Real espeak and offline engines, a FakeDevice, a real temp spool; no sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import soundfile as sf
from structlog.testing import capture_logs

from tests.conftest import VRAM_KEYS, drop, hello, make_settings, read_report, unit_service
from voicedrop.config import GB
from voicedrop.daemon.listeners import Listener
from voicedrop.daemon.service import Service
from voicedrop.fsutil import temp_path
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.spool.deaths import Death
from voicedrop.testing import FakeDevice, FakeModel, ManualClock


def run_all(service: Service) -> list[Any]:
    reports = []
    while (report := service.executor.step()) is not None:
        reports.append(report)
    return reports


def test_a_good_job_yields_audio_and_a_complete_report(service):
    drop(service.spool.inbox, "hi.json", hello(output={"name": "greeting"}))
    [report] = run_all(service)
    out = service.spool.outbox / "hi"
    assert report.status == "done"
    data = read_report(out)
    assert data["job_id"] == "hi" and data["source"] == "hi.json" and data["attempt"] == 1
    assert data["manifest"]["text"] == "Hello there."
    assert set(data["vram"]["before"]) == VRAM_KEYS == set(data["vram"]["after"])
    assert [s["name"] for s in data["stages"]] == ["tts", "post"]
    assert data["stages"][0]["engine"] == "espeak"
    assert data["events"][0]["event"] == "load" and data["events"][0]["key"] == "espeak"
    assert data["versions"]["voicedrop"] and "espeakng-loader" in data["versions"]["espeak"]
    [output] = data["outputs"]
    audio, rate = sf.read(out / "greeting.wav")
    assert output["file"] == "greeting.wav" and output["sample_rate"] == rate == 22050
    assert output["duration_s"] == pytest.approx(len(audio) / rate, abs=1e-3)
    assert output["peak_dbfs"] < 0
    assert list(service.spool.work.iterdir()) == []


def test_flac_at_48k_with_a_loudness_target(service):
    drop(
        service.spool.inbox,
        "loud.json",
        hello(
            text="A longer sentence, so that loudness can be measured properly.",
            output={"format": "flac", "sample_rate": 48000, "loudness_lufs": -16, "name": "loud"},
        ),
    )
    [report] = run_all(service)
    [output] = report.outputs
    info = sf.info(str(service.spool.outbox / "loud" / "loud.flac"))
    assert info.format == "FLAC" and info.samplerate == 48000
    assert output.loudness_lufs == pytest.approx(-16, abs=1.0)
    assert output.peak_dbfs <= -1.0 + 0.05


def test_segments_become_one_file_each(service):
    drop(
        service.spool.inbox,
        "seg.json",
        {
            "segments": [{"id": "one", "text": "First."}, {"id": "two", "text": "Second part."}],
            "tts": {"engine": "espeak"},
            "output": {"name": "part"},
        },
    )
    [report] = run_all(service)
    assert [o.file for o in report.outputs] == ["part-one.wav", "part-two.wav"]


BAD_CASES = {
    "malformed": (b'{"text": ', None, "malformed JSON"),
    "unknown_key": (hello(speed=2), "speed", "unknown key"),
    "no_text": ({"tts": {"engine": "espeak"}}, None, "exactly one of"),
    "too_long": (hello(text="x" * 6000), None, "the limit is 5000"),
    "unknown_engine": ({"text": "x", "tts": {"engine": "nope"}}, "tts.engine", "unknown engine"),
    "unknown_voice": (
        {"text": "x", "tts": {"engine": "espeak", "voice": "bob"}},
        "tts.voice",
        "unknown espeak voice 'bob'",
    ),
    "unknown_language": (
        {"text": "x", "tts": {"engine": "espeak", "language": "qq"}},
        "tts.language",
        "no voice for 'qq'",
    ),
    "unknown_model": (
        hello(convert={"engine": "tape", "model": "ghost"}),
        "convert.model",
        "unknown tape model 'ghost'",
    ),
    "unknown_option": (
        hello(tts={"engine": "espeak", "options": {"speed": 3}}),
        "tts.options.speed",
        "unknown option",
    ),
    "absolute_ref": (
        {"text": "x", "tts": {"engine": "espeak", "voice": "/etc/a.wav"}},
        "tts.voice",
        "relative",
    ),
    "dotdot_ref": (
        {"text": "x", "tts": {"engine": "espeak", "voice": "../a.wav"}},
        "tts.voice",
        "'..'",
    ),
    "missing_ref": (
        {"text": "x", "tts": {"engine": "espeak", "voice": "gone.wav"}},
        "tts.voice",
        "not found",
    ),
    "non_utf8": (
        '{"text": "caf\u00e9", "tts": {"engine": "espeak"}}'.encode("latin-1"),
        None,
        "not UTF-8",
    ),
    "huge": (json.dumps(hello(text="x" * 70000)).encode(), None, "the limit is 65536"),
    "deep": (b'{"text": ' + b"[" * 20000 + b"]" * 20000 + b"}", None, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_fails_with_a_report_naming_the_field(settings, case):
    # a missing reference waits no more
    service = unit_service(settings, wall=lambda: time.time() + 3600)
    data, field, fragment = BAD_CASES[case]
    drop(service.spool.inbox, "bystander.json.partial", b"untouched")
    drop(service.spool.inbox, f"{case}.json", data)
    [report] = run_all(service)
    folder = service.spool.failed / case
    saved = read_report(folder)
    assert saved["status"] == "failed" and report.error is not None
    assert saved["error"]["field"] == field
    assert fragment in saved["error"]["message"]
    assert saved["error"]["kind"] == "permanent"
    assert (folder / "manifest.json").exists()
    assert (service.spool.inbox / "bystander.json.partial").read_bytes() == b"untouched"
    assert list(service.spool.outbox.iterdir()) == []


def test_symlinked_reference_is_refused(service, tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF")
    (service.spool.inbox / "ref.wav").symlink_to(secret)
    drop(
        service.spool.inbox,
        "j.json",
        {"text": "x", "tts": {"engine": "espeak", "voice": "ref.wav"}},
    )
    run_all(service)
    assert "symlink" in read_report(service.spool.failed / "j")["error"]["message"]


def test_symlinked_manifest_is_refused(service, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(hello()))
    (service.spool.inbox / "link.json").symlink_to(outside)
    run_all(service)
    report = read_report(service.spool.failed / "link")
    assert report["status"] == "failed" and "symlink" in report["error"]["message"]
    assert report["manifest"] is None


def test_reference_recording_is_copied_with_the_job_even_when_it_fails(service):
    sf.write(str(service.spool.inbox / "alice.wav"), [0.0] * 2205, 22050)
    drop(
        service.spool.inbox,
        "clone.json",
        {"text": "x", "tts": {"engine": "espeak", "voice": "alice.wav"}},
    )
    run_all(service)
    folder = service.spool.failed / "clone"
    assert read_report(folder)["error"]["field"] == "tts.voice"
    assert "cannot clone" in read_report(folder)["error"]["message"]
    assert (folder / "inputs" / "alice.wav").exists()


def test_a_client_id_runs_once_then_reports_duplicates(service):
    drop(service.spool.inbox, "first.json", hello(id="order-7"))
    run_all(service)
    drop(service.spool.inbox, "again.json", hello(id="order-7"))
    [report] = run_all(service)
    assert report.status == "duplicate" and report.duplicate_of == "first"
    assert sorted(p.name for p in (service.spool.outbox / "again").iterdir()) == ["report.json"]


def test_a_job_left_in_work_by_a_crash_runs_again(settings):
    svc = Service(settings, device=FakeDevice(GB))
    svc.spool.ensure()
    drop(svc.spool.inbox, "j.json", hello())
    job = svc.spool.begin_attempt(svc.spool.claim(svc.spool.scan_inbox()[0]))  # then "crash"
    svc.spool.leases.release(job.job_id)  # as the dead daemon's lease went with it
    svc = unit_service(settings, device=FakeDevice(GB))
    [report] = run_all(svc)
    assert report.status == "done" and report.attempt == job.attempts + 1 == 2
    assert report.previous_errors == []  # it died outside its stages: nothing to say


def test_a_job_that_crashed_the_daemon_too_often_is_failed(settings):
    svc = Service(settings, device=FakeDevice(GB))
    svc.spool.ensure()
    drop(svc.spool.inbox, "poison.json", hello())
    job = svc.spool.claim(svc.spool.scan_inbox()[0])
    crash = Death(True, "fatal_signal", "the daemon crashed while this job ran (SIGSEGV)")
    for _ in range(settings.limits.max_attempts):
        job = svc.spool.begin_attempt(job, crash)
    svc.spool.leases.release(job.job_id)
    svc = unit_service(settings, device=FakeDevice(GB))
    [report] = run_all(svc)
    assert report.status == "failed" and report.error.code == "too_many_attempts"
    assert "SIGSEGV" in report.error.message
    assert [e.code for e in report.previous_errors] == ["daemon_died"] * 3
    assert (svc.spool.failed / "poison" / "manifest.json").exists()


def test_a_job_killed_from_outside_many_times_still_runs(settings):
    svc = Service(settings, device=FakeDevice(GB))
    svc.spool.ensure()
    drop(svc.spool.inbox, "unlucky.json", hello())
    job = svc.spool.claim(svc.spool.scan_inbox()[0])
    kill = Death(False, "killed", "the daemon was killed from outside while this job ran")
    for _ in range(settings.limits.max_attempts + 3):
        job = svc.spool.begin_attempt(job, kill)
    svc.spool.leases.release(job.job_id)
    svc = unit_service(settings, device=FakeDevice(GB))
    [report] = run_all(svc)
    assert report.status == "done", report.error
    assert len(report.previous_errors) == settings.limits.max_attempts + 3


class HungryEngine:
    """A TTS engine whose model is 1 GB and whose inference needs `scratch` bytes."""

    name = "hungry"

    def __init__(self, device: FakeDevice, scratch: int, ooms: int) -> None:
        self.device, self.scratch, self.ooms = device, scratch, ooms

    def version(self) -> str:
        return "test"

    def check(self, spec, voice) -> None:
        return None

    def models(self, request) -> dict[str, ModelSpec]:
        return {"model": ModelSpec("hungry", lambda _d: FakeModel(GB), GB)}

    def deterministic(self, request) -> bool:
        return False  # every attempt renders: the test counts out-of-memory errors

    def stream(self, models, text, request, progress) -> Iterator[Audio]:
        if self.ooms:
            self.ooms -= 1
            self.device.inject_oom()
        self.device.allocate(self.scratch)
        self.device.free(self.scratch)
        yield Audio(__import__("numpy").zeros(2205, "float32"), 22050)


def hungry_service(settings, ooms, **parts):
    device = FakeDevice(4 * GB)
    engines = build_engines(settings)
    engines.tts["hungry"] = HungryEngine(device, GB, ooms)  # type: ignore[assignment]
    svc = unit_service(settings, device=device, engines=engines, **parts)
    # another model is resident: the ladder must evict it
    with svc.manager.acquire(ModelSpec("other", lambda _d: FakeModel(GB), GB)):
        pass
    return svc, device


def test_out_of_memory_in_a_stage_evicts_and_retries_once(settings):
    svc, _ = hungry_service(settings, ooms=1)
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    [report] = run_all(svc)
    assert report.status == "done"
    assert ("evict", "other") in [(e.event, e.key) for e in report.events]


def test_out_of_memory_twice_waits_and_retries_with_memory_back_at_baseline(settings):
    clock = ManualClock(1000.0)
    svc, device = hungry_service(settings, ooms=2, clock=clock)
    baseline = device.memory().allocated - GB  # everything but the 'other' model
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    drop(svc.spool.inbox, "k.json", hello())
    first, other = run_all(svc)
    assert first.error.code == "out_of_memory" and first.error.kind == "transient"
    assert device.memory().allocated == baseline and device.scratch == 0
    # not failed: it waits in work/ for its retry, while other jobs run
    assert other.status == "done"
    assert list(svc.spool.failed.iterdir()) == [] and (svc.spool.work / "j").exists()
    clock.now += settings.limits.retry_delay_s
    assert [r.status for r in run_all(svc)] == ["done"]
    saved = read_report(svc.spool.outbox / "j")
    assert saved["status"] == "done" and saved["attempt"] == 2
    assert [e["code"] for e in saved["previous_errors"]] == ["out_of_memory"]


def test_a_job_failing_transiently_every_time_fails_after_max_attempts(settings):
    clock = ManualClock(1000.0)
    svc, _ = hungry_service(settings, ooms=100, clock=clock)
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    for attempt in range(1, settings.limits.max_attempts + 1):
        [report] = run_all(svc)
        assert report.attempt == attempt
        assert run_all(svc) == []  # nothing is due before the (doubling) delay
        clock.now += settings.limits.retry_delay_s * 2 ** (attempt - 1)
    saved = read_report(svc.spool.failed / "j")
    assert saved["status"] == "failed" and saved["attempt"] == settings.limits.max_attempts
    assert [e["code"] for e in saved["previous_errors"]] == ["out_of_memory"] * 2


def test_low_vram_report_shows_tts_leaving_before_conversion_arrives(tmp_path):
    settings = make_settings(tmp_path, low_vram=True)
    svc = unit_service(settings, device=FakeDevice(4 * GB))
    drop(svc.spool.inbox, "j.json", hello(convert={"engine": "tape", "model": "chipmunk"}))
    [report] = run_all(svc)
    on_device = [(e.event, e.key) for e in report.events if "device" in (e.src, e.dst)]
    arrival = "promote" if any(e.event == "prefetch" for e in report.events) else "load"
    assert on_device == [
        ("load", "espeak"),
        ("demote", "espeak"),
        (arrival, "tape:chipmunk"),  # prefetched into host memory while the TTS ran, or not
        ("demote", "tape:chipmunk"),
    ]
    assert report.vram.after.low_vram_mode is True


def test_status_file_tracks_the_daemon(service):
    drop(service.spool.inbox, "j.json", hello())
    seen = []

    class Reader(Listener):
        def started(self, job_id: str, attempt: int) -> None:
            seen.append(json.loads((service.spool.state / "status.json").read_text()))

    service.events.add(Reader())  # after the status file: it reads what was just written
    run_all(service)
    # a job start is written at once, so `status` and `submit --wait` see it
    assert seen[0]["state"] == "running" and seen[0]["job_id"] == "j"
    service.flush()  # what the loop does before it waits
    final = json.loads((service.spool.state / "status.json").read_text())
    assert final["state"] == "idle" and final["job_id"] is None
    assert set(final["vram"]) == VRAM_KEYS and final["pid"] == os.getpid()
    assert final["models"]["espeak"]["tier"] == "device"


def test_a_spool_write_error_is_survived_and_the_job_retried(service):
    """Disk full while committing: the loop logs, waits, and finishes the job later."""
    import errno
    import threading

    drop(service.spool.inbox, "j.json", hello())
    original = service.spool.commit_done
    failures = []

    def full_disk(job, report_json):
        if not failures:
            failures.append(job.job_id)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(job, report_json)

    service.spool.commit_done = full_disk  # type: ignore[method-assign]
    service.queue.backoff.retry_s = 0.0
    service.executor.run(threading.Event(), threading.Event(), once=True)
    assert failures == ["j"]
    saved = read_report(service.spool.outbox / "j")
    assert saved["status"] == "done" and saved["attempt"] == 2
    assert list(service.spool.work.iterdir()) == []


def test_spool_folders_removed_under_a_running_daemon_are_made_again(service):
    """A clean-up script's `rm -r work outbox failed`: the daemon used to back off for
    good, every claim failing, until it was restarted."""
    import shutil
    import threading

    service.queue.backoff.retry_s = 0.0
    service.queue.start()
    for folder in (service.spool.work, service.spool.outbox, service.spool.failed):
        shutil.rmtree(folder)
    drop(service.spool.inbox, "good.json", hello())
    drop(service.spool.inbox, "bad.json", {"text": "x", "tts": {"engine": "nope"}})
    with capture_logs() as logs:
        service.executor.run(threading.Event(), threading.Event(), once=True)
    restored = [e for e in logs if e["event"] == "spool.folders_restored"]
    assert restored and restored[0]["folders"] == ["work", "outbox", "failed"]
    assert read_report(service.spool.outbox / "good")["status"] == "done"
    assert read_report(service.spool.failed / "bad")["error"]["field"] == "tts.engine"


def test_a_spool_whose_inbox_is_gone_is_not_made_again_in_its_place(service):
    """An unmounted share: empty local folders would take jobs that vanish on remount."""
    import shutil

    shutil.rmtree(service.spool.root)
    assert service.spool.restore() == []
    assert not service.spool.root.exists()


def test_an_io_error_during_a_job_is_reported_as_transient(tmp_path, monkeypatch):
    import errno

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("voicedrop.pipeline.audio.write_audio", full)
    svc = unit_service(make_settings(tmp_path, limits={"max_attempts": 1}), device=FakeDevice(GB))
    drop(svc.spool.inbox, "j.json", hello())
    run_all(svc)
    error = read_report(svc.spool.failed / "j")["error"]
    assert error["code"] == "io_error" and error["kind"] == "transient"
    assert "No space left" in error["message"]


def test_a_spool_error_does_not_run_a_job_waiting_for_its_retry_early(settings):
    import errno
    import threading

    clock = ManualClock(1000.0)
    svc, _ = hungry_service(settings, ooms=2, clock=clock)
    svc.queue.backoff.retry_s = 0.0
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    [first] = run_all(svc)  # transient failure: j waits in work/
    assert first.error.kind == "transient"
    original = svc.spool.commit_done
    failures = []

    def full_disk(job, report_json):
        if not failures:
            failures.append(job.job_id)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(job, report_json)

    svc.spool.commit_done = full_disk  # type: ignore[method-assign]
    drop(svc.spool.inbox, "k.json", hello())
    stop = threading.Event()

    class StopOnceKIsCommitted(Listener):
        def finished(self, report) -> None:
            if failures and not (svc.spool.work / "k").exists():
                stop.set()  # --once would otherwise wait for j's retry, due only later

    svc.events.add(StopOnceKIsCommitted())
    svc.executor.run(stop, threading.Event(), once=True, max_wait_s=0.01)
    assert failures == ["k"] and read_report(svc.spool.outbox / "k")["attempt"] == 2
    assert (svc.spool.work / "j").exists(), "j ran before its retry delay"
    clock.now += settings.limits.retry_delay_s
    assert [r.status for r in run_all(svc)] == ["done"]
    assert read_report(svc.spool.outbox / "j")["attempt"] == 2


def test_a_file_name_that_is_not_utf8_fails_with_a_report_and_the_queue_goes_on(service):
    inbox = service.spool.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    hostile = os.fsdecode(b"caf\xe9-\xff.json")  # Latin-1 bytes, as a Windows share may write
    (inbox / hostile).write_text(json.dumps(hello()))
    drop(inbox, "next.json", hello())
    reports = run_all(service)
    assert [r.status for r in reports] == ["failed", "done"]
    [folder] = list(service.spool.failed.iterdir())
    saved = read_report(folder)  # the report is valid JSON, under a safe job id
    assert folder.name.isascii() and saved["error"]["field"] == "file name"
    assert "not valid UTF-8" in saved["error"]["message"]
    assert saved["source"] == "caf\ufffd-\ufffd.json"
    assert list(service.spool.work.iterdir()) == []


def test_a_report_that_cannot_be_built_still_ends_the_job(service, monkeypatch):
    import voicedrop.daemon.attempt as attempt

    def broken(*_a, **_k):
        raise ValueError("surrogates not allowed \udcff")

    monkeypatch.setattr(attempt, "build_report", broken)
    drop(service.spool.inbox, "j.json", hello())
    [report] = run_all(service)
    assert report.status == "failed"
    saved = read_report(service.spool.failed / "j")
    assert saved["status"] == "failed" and saved["error"]["code"] == "internal_error"
    assert "could not be built" in saved["error"]["message"]
    assert set(saved["vram"]["after"]) == VRAM_KEYS
    assert list(service.spool.work.iterdir()) == []


def test_a_commit_that_fails_is_finished_when_the_outbox_comes_back(settings):
    """Outbox unwritable for a while: the finished job is published once it is back,
    without running again, and nothing new is claimed in between."""
    clock = ManualClock(1000.0)
    svc = unit_service(settings, device=FakeDevice(8 * GB), clock=clock)
    original = svc.spool._move_out
    broken = {"on": True}

    def unwritable(job):
        if broken["on"]:
            raise PermissionError(13, "Permission denied", str(svc.spool.outbox))
        return original(job)

    svc.spool._move_out = unwritable  # type: ignore[method-assign]
    drop(svc.spool.inbox, "j.json", hello())
    with pytest.raises(OSError):
        svc.executor.step()
    svc.queue.backoff.failed(OSError("outbox unwritable"))  # what run() does with it
    drop(svc.spool.inbox, "k.json", hello())
    assert svc.executor.step() is None, "claimed a new job while the spool is in trouble"
    clock.now += 5.0
    assert svc.executor.step() is None  # still broken: tried again, waits twice as long
    assert (
        svc.queue.backoff.wait_s == 10.0 and (svc.spool.work / "j" / "out" / "report.json").exists()
    )
    broken["on"] = False
    clock.now += 10.0
    [k] = run_all(svc)
    assert k.job_id == "k" and k.status == "done"
    j = read_report(svc.spool.outbox / "j")
    assert j["status"] == "done" and j["attempt"] == 1  # published, not run again
    assert list(svc.spool.work.iterdir()) == []


def test_disk_full_while_counting_an_attempt_backs_off_and_keeps_the_retry_schedule(settings):
    import errno

    clock = ManualClock(1000.0)
    svc, _ = hungry_service(settings, ooms=2, clock=clock)
    drop(svc.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "hungry"}})
    [first] = run_all(svc)  # j fails transiently: due again 30 s later
    assert first.error.kind == "transient"
    original = svc.spool._write_meta
    full = {"on": True}

    def no_space(job):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(job)

    svc.spool._write_meta = no_space  # type: ignore[method-assign]
    drop(svc.spool.inbox, "k.json", hello())
    waits = []
    for _ in range(4):
        try:
            assert svc.executor.step() is None
        except OSError as exc:
            svc.queue.backoff.failed(exc)  # what run() does with it
        waits.append(svc.queue.backoff.wait_s)
        clock.now += svc.queue.backoff.wait_s
    assert waits == [5.0, 10.0, 20.0, 40.0], "the retries of a full disk must back off"
    full["on"] = False
    reports = run_all(svc)
    assert sorted((r.job_id, r.status, r.attempt) for r in reports) == [
        ("j", "done", 2),  # its retry was due meanwhile: it runs as soon as space is back
        ("k", "done", 1),  # the attempts that could not even be counted do not count
    ]
    assert list(svc.spool.work.iterdir()) == []


def test_a_failed_attempt_leaves_no_partial_output(settings, monkeypatch):
    import errno

    def full(audio, path, fmt, *_more):
        path.write_bytes(b"RIFF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("voicedrop.pipeline.audio.write_audio", full)
    svc = unit_service(settings, device=FakeDevice(GB))
    drop(svc.spool.inbox, "j.json", hello())
    [report] = run_all(svc)
    assert report.error.kind == "transient"
    assert (svc.spool.work / "j").exists() and not (svc.spool.work / "j" / "out").exists()


def test_a_new_stage_reaches_the_status_file_at_once(service):
    """Progress inside a stage is throttled, but the post stage must show up, not 'tts 8/10'."""
    status = service.spool.state / "status.json"
    service.events.started("j", 1)
    service.events.stage("j", "tts 1/10")
    service.events.stage("j", "tts 2/10")  # within the throttle interval: not written yet
    assert json.loads(status.read_text())["stage"] == "tts 1/10"
    service.events.stage("j", "post")
    assert json.loads(status.read_text())["stage"] == "post"


class Wall:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_manifest_waits_for_a_reference_that_arrives_after_it(settings):
    """A folder copied onto a share may land its .json before its .wav: not taken early."""
    service = unit_service(settings, wall=(wall := Wall()))
    tts = {"engine": "noop", "voice": "refs/late.wav"}
    drop(service.spool.inbox, "j.json", {"text": "x", "tts": tts})
    assert service.executor.step() is None, "taken before its reference arrived"
    assert (service.spool.inbox / "j.json").exists()
    (service.spool.inbox / "refs").mkdir(exist_ok=True)
    sf.write(str(service.spool.inbox / "refs" / "late.wav"), [0.0] * 2205, 22050)
    wall.now += 1
    [report] = run_all(service)
    assert report.status == "done" and report.attempt == 1


def test_a_reference_that_never_arrives_fails_after_the_wait(settings):
    service = unit_service(settings, wall=(wall := Wall()))
    drop(service.spool.inbox, "j.json", {"text": "x", "tts": {"engine": "noop", "voice": "x.wav"}})
    assert service.executor.step() is None
    wall.now += service.settings.watcher.reference_wait_s + 1
    [report] = run_all(service)
    assert report.status == "failed" and report.error.field == "tts.voice"
    assert "not found" in report.error.message


def test_a_report_counts_the_jobs_that_passed_it_for_affinity(service):
    drop(service.spool.inbox, "first.json", hello())
    assert [r.status for r in run_all(service)] == ["done"]  # espeak is resident now
    older = drop(service.spool.inbox, "silence.json", {"text": "x", "tts": {"engine": "noop"}})
    drop(service.spool.inbox, "speech.json", hello())
    os.utime(older, (time.time() - 10, time.time() - 10))
    reports = {r.job_id: r for r in run_all(service)}
    assert list(reports) == ["speech", "silence"]  # its model was loaded: it went first
    assert reports["silence"].passed_by == 1 and reports["speech"].passed_by == 0
    assert read_report(service.spool.outbox / "silence")["passed_by"] == 1


def test_an_entry_that_cannot_be_moved_is_said_once_and_the_queue_goes_on(service, monkeypatch):
    """A file of another user in a sticky inbox, a mount point: renaming it fails; that is
    this file's problem, not the spool's, and it must not hold up the jobs behind it."""
    import errno

    import voicedrop.spool.jobs as spool_module

    real_rename = os.rename

    def rename(src, dst, *a, **k):
        if os.path.basename(src) == "stuck.json":
            raise PermissionError(errno.EACCES, "Permission denied", src)
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(spool_module.os, "rename", rename)
    stuck = drop(service.spool.inbox, "stuck.json", hello())
    os.utime(stuck, (time.time() - 60, time.time() - 60))  # oldest: first in line
    drop(service.spool.inbox, "next.json", hello())
    with capture_logs() as logs:
        reports = run_all(service)
        assert run_all(service) == []  # looked at again: not said again
    assert [r.job_id for r in reports] == ["next"]
    said = [e for e in logs if e["event"] == "inbox.unclaimable"]
    assert len(said) == 1 and said[0]["file"] == "stuck.json" and "Permission" in said[0]["reason"]
    assert stuck.exists() and list(service.spool.work.iterdir()) == []


def test_a_reference_still_being_written_waits_until_it_settles(tmp_path):
    """The manifest's own rule for every file it names: a reference or script written in
    place (no close seen: no watcher here) is taken only once unchanged for the delay."""
    clock, wall = ManualClock(1000.0), Wall()
    settings = make_settings(tmp_path, watcher={"stable_delay_s": 2.0})
    svc = unit_service(settings, clock=clock, wall=wall)
    inbox = svc.spool.inbox
    sf.write(str(inbox / "voice.wav"), [0.0] * 2205, 22050)
    os.utime(inbox / "voice.wav", (wall.now, wall.now))  # just written
    job = drop(inbox, "j.json", {"text": "x", "tts": {"engine": "noop", "voice": "voice.wav"}})
    os.utime(job, (wall.now - 10, wall.now - 10))  # the manifest itself is complete
    assert svc.executor.step() is None, "taken while its reference was being written"
    clock.now, wall.now = clock.now + 1.0, wall.now + 1.0
    assert svc.executor.step() is None
    clock.now, wall.now = clock.now + 1.5, wall.now + 1.5
    [report] = run_all(svc)
    assert report.status == "done"


def test_evidence_is_left_while_the_stages_run_and_cleared_after(service):
    seen = {}

    def progress_spy(message: str) -> None:
        work = service.spool.work
        for job in work.iterdir():
            seen[message] = sorted(p.name for p in job.iterdir() if p.name.startswith("."))

    class Spy(Listener):
        def started(self, job_id: str, attempt: int) -> None:
            progress_spy("start")

        def stage(self, job_id: str, stage: str) -> None:
            progress_spy(stage)

    service.events.add(Spy())
    drop(service.spool.inbox, "j.json", hello())
    [report] = run_all(service)
    assert report.status == "done"
    assert seen["tts"] == [".fatal", ".lease", ".running"]  # during the stages
    assert seen["start"] == [".lease"]  # at its start, before them


def test_freed_memory_goes_back_to_the_system_when_the_queue_runs_dry(service):
    """glibc keeps freed memory: a daemon's RSS climbed by fragmentation alone."""
    from voicedrop.daemon.heap import TRIM_EVERY_S

    heap = service.heap
    trims = []
    heap.trim = lambda: trims.append(heap.clock())  # type: ignore[method-assign]
    service._idle()
    assert trims == [], "nothing ran: nothing to give back"
    drop(service.spool.inbox, "j.json", hello())
    [report] = run_all(service)
    service._idle()
    assert len(trims) == 1  # after work, when idle
    service._idle()
    assert len(trims) == 1  # nothing ran since
    now = [heap.clock()]
    heap.clock = lambda: now[0]
    heap._last = now[0]
    heap.finished(report)
    now[0] += TRIM_EVERY_S
    heap.finished(report)
    assert len(trims) == 2  # busy for a while: at most every TRIM_EVERY_S


def test_a_starting_service_removes_the_temp_files_killed_writers_left_in_its_state(settings):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    svc = Service(settings, device=FakeDevice(GB))
    state = svc.spool.state
    (state / "control").mkdir(parents=True, exist_ok=True)
    (state / "notify").mkdir(parents=True, exist_ok=True)
    orphans = [
        temp_path(state / "control" / "0123.json", pid=gone.pid),  # a killed `voicedrop load`
        temp_path(state / "notify" / "j.json", pid=gone.pid),  # a killed daemon's delivery
    ]
    live = temp_path(state / "control" / "4567.json")  # a writer that still runs
    for temp in [*orphans, live]:
        temp.write_text("{")
    with svc:
        assert [t.exists() for t in orphans] == [False, False] and live.exists()


def test_a_closing_service_removes_a_clip_a_worker_killed_after_its_start_left(settings):
    """A daemon killed with -9 takes its device worker down a moment later: the next
    daemon's start found that worker still running, kept its half-written clip, and
    nothing removed it after (the kill -9 torture test found it in CI)."""
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    svc = Service(settings, device=FakeDevice(GB))
    shard = svc.spool.state / "clips" / "9e"
    shard.mkdir(parents=True)
    temp = temp_path(shard / f"{'9e' * 32}.wav", pid=writer.pid)
    temp.write_bytes(b"RIFF")
    try:
        with svc:
            assert temp.exists()  # its writer still runs at the start
            writer.kill()
            writer.wait()
    finally:
        writer.kill()
        writer.wait()
    assert not temp.exists()


def test_a_service_holds_its_state_directory_while_entered_and_closes_everything(settings):
    from voicedrop.errors import AlreadyRunningError

    first = Service(settings, device=FakeDevice(GB))
    with first:
        drop(first.spool.inbox, "j.json", hello())
        first.executor.start()
        assert first.executor.step().status == "done"
        assert first.manager.resident_keys() == {"espeak"}
        second = Service(settings, device=FakeDevice(GB))
        with pytest.raises(AlreadyRunningError), second:
            pass
    assert first.manager.resident_keys() == set(), "models left after close"
    with Service(settings, device=FakeDevice(GB)):  # given back: another may take it
        pass
