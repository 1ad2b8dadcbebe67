"""The device worker process: a job's stages run in a child of the daemon that exits when
idle, and whose death fails one attempt, never the daemon."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from tests.conftest import drop, hello, make_settings, read_report, unit_service
from voicedrop.testing import ManualClock

SRT = "".join(
    f"{i}\n00:00:{2 * i:02},000 --> 00:00:{2 * i + 1:02},000\nLine {i}.\n\n" for i in (1, 2, 3)
)


def worker_service(tmp_path, idle_s: float = 60, **extra):
    settings = make_settings(
        tmp_path, residency={"worker": "process", "worker_idle_s": idle_s}, **extra
    )
    return unit_service(settings, **({"clock": extra.pop("clock")} if "clock" in extra else {}))


def test_a_job_runs_on_the_worker_and_a_second_pays_no_start(tmp_path):
    service = worker_service(tmp_path)
    with service:
        drop(service.spool.inbox, "a.json", hello())
        first = service.executor.step()
        [worker] = service.dispatch.workers()
        drop(service.spool.inbox, "b.json", hello())
        second = service.executor.step()
        [after] = service.dispatch.workers()
    assert first.status == second.status == "done"
    assert worker["state"] == "ready" and worker["pid"] not in (None, os.getpid())
    assert worker["models"] == ["espeak"] and worker["exits_in_s"] is not None
    assert after["pid"] == worker["pid"] and after["starts"] == 1  # the same, warm worker
    assert read_report(service.spool.outbox / "b")["worker"]["device"] == "cpu"
    assert service.manager.models() == {}  # the daemon itself holds no model


def test_with_worker_idle_s_0_the_worker_exits_after_each_job(tmp_path):
    service = worker_service(tmp_path, idle_s=0)
    with service:
        drop(service.spool.inbox, "a.json", hello())
        assert service.executor.step().status == "done"
        deadline = time.monotonic() + 30
        while service.dispatch.workers()[0]["state"] != "none":
            assert time.monotonic() < deadline, service.dispatch.workers()
            time.sleep(0.05)
        drop(service.spool.inbox, "b.json", hello())
        assert service.executor.step().status == "done"
        assert service.dispatch.workers()[0]["starts"] == 2


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_worker_killed_mid_job_fails_that_attempt_and_the_retry_runs_on_a_fresh_one(
    tmp_path, sig
):
    clock = ManualClock(1000.0)
    settings = make_settings(
        tmp_path,
        residency={"worker": "process", "worker_idle_s": 60},
        engines={"noop": {"work_s": 30}},
    )
    service = unit_service(settings, clock=clock)
    with service:
        worker = service.dispatch.worker
        drop(service.spool.inbox, "slow.json", {"text": "x", "tts": {"engine": "noop"}})

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 60
            while worker.describe()["state"] != "busy" and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(worker.describe()["pid"], sig)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        first = service.executor.step()
        killer.join()
        assert first.error is not None and first.error.code == "worker_lost"
        assert first.error.kind == "transient" and sig.name in first.error.message
        service.settings.engines["noop"]["work_s"] = 0  # the retry is quick
        service.dispatch.reconfigure(service.settings)
        clock.now += settings.limits.retry_delay_s
        second = service.executor.step()
    assert second.status == "done" and second.attempt == 2
    assert [e.code for e in second.previous_errors] == ["worker_lost"]
    assert worker.starts == 2 and worker.lost == 1


def test_a_script_job_on_the_worker_streams_and_keeps_every_cue(tmp_path):
    service = worker_service(tmp_path, presets={"dub": {"tts": {"engine": "noop"}}})
    with service:
        service.presets.ensure()
        (service.spool.inbox / "dub" / "ep.srt").write_text(SRT)
        service.presets.collect()
        report = service.executor.step()
    assert report.status == "done" and report.script is not None and report.script.cues == 3
    assert not list((service.spool.inbox / "refs").iterdir())


@pytest.mark.parametrize(
    ("message", "retires"),
    [
        ("CUDA error: an illegal memory access was encountered", True),
        ("CUDA error: device-side assert triggered", True),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("reference: not an audio file", False),
    ],
)
def test_a_worker_retires_after_an_error_that_poisons_its_device_context(message, retires):
    from voicedrop.cluster.child import poisoned
    from voicedrop.errors import StageError
    from voicedrop.pipeline.runner import Outcome
    from voicedrop.report import VramStats

    vram = VramStats(available=False, low_vram_mode=False, allocated_gb=0, reserved_gb=0,
                     free_gb=0, total_gb=0, cached_models=0)  # fmt: skip
    assert poisoned(Outcome(vram, error=StageError(message))) is retires


def test_the_worker_starts_while_a_dropped_file_is_still_settling(tmp_path):
    """A file with no close event waits stable_delay_s before it is taken: the worker's own
    start (a fresh interpreter, the engines) runs meanwhile, not after."""
    service = worker_service(tmp_path, watcher={"stable_delay_s": 30.0})
    with service:
        drop(service.spool.inbox, "a.json", hello())
        assert service.executor.step() is None  # not complete yet: nothing claimed
        assert service.dispatch.workers()[0]["state"] == "starting"
        assert (service.spool.inbox / "a.json").exists()


def test_an_idle_worker_the_card_needs_ends_between_jobs():
    from multiprocessing import Pipe

    from voicedrop.cluster.child import _next

    ours, theirs = Pipe()
    worker = SimpleNamespace(over=threading.Event(), manager=SimpleNamespace(expire=list))
    worker.over.set()  # the neighbour watch asked: what this process holds is in the way
    assert _next(theirs, -1, worker) is None  # "never idle out" does not keep it either
    worker.over.clear()
    ours.send(("stop",))
    assert _next(theirs, -1, worker) == ("stop",)


def test_affinity_follows_the_models_the_worker_holds(tmp_path):
    from tests.unit.test_executor import run_all

    service = worker_service(tmp_path)
    with service:
        drop(service.spool.inbox, "first.json", hello())
        assert [r.status for r in run_all(service)] == ["done"]  # espeak: in the worker
        older = drop(service.spool.inbox, "silence.json", {"text": "x", "tts": {"engine": "noop"}})
        drop(service.spool.inbox, "speech.json", hello())
        os.utime(older, (time.time() - 10, time.time() - 10))
        reports = [r.job_id for r in run_all(service)]
    assert reports == ["speech", "silence"]  # its model was in the worker: it went first


def test_with_no_worker_alive_the_vram_fields_are_what_the_card_said_when_it_exited(tmp_path):
    from voicedrop.card import NvmlCard
    from voicedrop.config import GB
    from voicedrop.testing import FakeDevice, FakeNvml

    card = FakeDevice(6 * GB)
    card.neighbours[4242] = 2 * GB  # an editor holds 2 GB; voicedrop, nothing once exited
    service = worker_service(tmp_path, idle_s=0)
    service.worker.card = NvmlCard(FakeNvml(card, pid=1))
    with service:
        drop(service.spool.inbox, "a.json", hello())
        assert service.executor.step().status == "done"
        deadline = time.monotonic() + 30
        while service.dispatch.workers()[0]["state"] != "none":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        snapshot = service._snapshot()
    vram, [worker] = snapshot["vram"], snapshot["workers"]
    assert vram.total_gb == 6.0 and vram.free_gb == 4.0 and vram.allocated_gb == 0.0
    assert worker["card"]["others"] == [{"pid": 4242, "name": "", "bytes": 2 * GB}]
    assert snapshot["models"] == {}


def test_voicedrop_status_says_what_the_card_holds_and_who_else_is_on_it(tmp_path):
    from voicedrop.client import render_status

    worker = {
        "kind": "process",
        "state": "ready",
        "pid": 77,
        "models": ["xtts"],
        "card": {
            "nvml": True,
            "total_bytes": 6 * 2**30,
            "free_bytes": 2 * 2**30,
            "ours_bytes": 1 * 2**30,
            "others": [{"pid": 4242, "name": "resolve", "bytes": 3 * 2**30}],
        },
    }
    out = {"daemon": "idle", "queue": {}, "current_job": None, "stage": None, "vram": {}}
    text = render_status({**out, "models": {}, "workers": [worker]}, tmp_path)
    assert "2.00 of 6.00 GB free; voicedrop 1.00 GB; others: resolve (4242) 3.00 GB" in text
    worker["card"] = {"nvml": False, "why": "NVML: Driver Not Loaded"}
    text = render_status({**out, "models": {}, "workers": [worker]}, tmp_path)
    assert "no per-process figures (NVML: Driver Not Loaded)" in text


def test_a_worker_that_ended_by_itself_as_a_job_was_sent_is_replaced_not_blamed(tmp_path):
    """An idle exit races a job being sent: the daemon finds the worker gone with code 0
    before it said anything of the job; the job goes to a fresh worker, same attempt."""
    service = worker_service(tmp_path)
    with service:
        worker = service.dispatch.worker
        worker.ready()
        proc = worker._proc
        worker._conn.send(("stop",))  # as its idle timer would
        proc.join(30)
        sent: list[str] = []  # until the job is sent, the daemon has not noticed
        real_alive, real_send = worker.alive, worker._send
        worker.alive = lambda: not sent or real_alive()
        worker._send = lambda message: sent.append(message[0]) or real_send(message)
        drop(service.spool.inbox, "a.json", hello())
        report = service.executor.step()
        del worker.alive, worker._send
        [after] = service.dispatch.workers()
    assert report.status == "done" and report.attempt == 1 and not report.previous_errors
    assert after["starts"] == 2 and after["lost"] == 0


def test_a_worker_for_torch_engines_imports_torch_as_it_starts(tmp_path):
    """It starts because a job came: torch's import (seconds) runs beside the job's own
    start, and a configuration of espeak alone never pays it."""
    from voicedrop.cluster.child import _model_libraries

    rvc = {"engine": "rvc", "path": str(tmp_path / "v.pth")}
    assert _model_libraries(make_settings(tmp_path)) == ()  # espeak and a drill model
    assert _model_libraries(make_settings(tmp_path, models={"alice": rvc})) == ("torch",)


def test_a_status_written_as_the_worker_dies_mid_job_fails_the_attempt_not_the_daemon(tmp_path):
    """A stage message makes the daemon write its status, which describes the worker; the
    worker had died just after sending it, the description forgot it, and the job's next
    receive failed an assertion that crashed the daemon (the kill -9 torture test found
    it). The job finds the death itself: a worker_lost attempt."""
    from voicedrop.daemon.process import DeviceWorker, WorkerLost

    class Dead:
        pid, exitcode = 4242, -signal.SIGSEGV

        def is_alive(self) -> bool:
            return False

        def join(self, timeout: float | None = None) -> None:
            return None

    class Pipe:
        def __init__(self) -> None:
            self.messages = [("stage", "tts")]

        def poll(self, timeout: float) -> bool:
            return bool(self.messages)

        def recv(self):
            return self.messages.pop(0)

        def close(self) -> None:
            return None

    settings = make_settings(tmp_path, residency={"worker": "process"})
    worker = DeviceWorker(settings)
    worker._proc, worker._conn, worker.state = Dead(), Pipe(), "busy"
    job = SimpleNamespace(stream=None, preempt=lambda: False)
    said = []
    with pytest.raises(WorkerLost) as lost:
        worker._serve(job, lambda stage: said.append(worker.describe()))  # type: ignore[arg-type]
    assert said and said[0]["state"] == "busy"
    assert "SIGSEGV" in str(lost.value)
