"""Prefetch: the next stage's models are read into the warm tier while this one computes.

A FakeDevice and models whose loads a test can hold open (a gate), so the races are
forced, not hoped for: an acquire meeting a read in flight, a shutdown in the middle of one.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from tests.conftest import drop, hello, make_settings, unit_service
from voicedrop.config import GB
from voicedrop.errors import ModelFileError
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.policies import LowPolicy, NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice, FakeModel

WAIT_S = 10.0


class Loads:
    """Model files whose reads are counted, can be held open, and can fail."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.in_flight: Counter[str] = Counter()
        self.overlaps = 0  # two reads of one model at once
        self.broken: set[str] = set()
        self._lock = threading.Lock()

    def spec(self, key: str, gb: float, actual_gb: float | None = None) -> ModelSpec:
        def load(_device: str) -> FakeModel:
            with self._lock:
                self.count[key] += 1
                self.in_flight[key] += 1
                self.overlaps += self.in_flight[key] > 1
            self.started.set()
            try:
                assert self.gate.wait(WAIT_S), "the test never opened the gate"
                if key in self.broken:
                    raise ModelFileError(f"{key}: cannot be loaded: truncated")
                return FakeModel(int((actual_gb or gb) * GB))
            finally:
                with self._lock:
                    self.in_flight[key] -= 1

        return ModelSpec(key, load, expected_bytes=int(gb * GB))


def manager(policy=None, capacity=6 * GB, warm_budget=16 * GB) -> ResidencyManager:
    return ResidencyManager(
        FakeDevice(capacity), policy or LowPolicy(), warm_budget=warm_budget, prefetch=True
    )


@pytest.fixture
def loads():
    return Loads()


def moves(events):
    return [(e.event, e.key) for e in events]


def test_the_next_stage_is_read_into_host_memory_and_placed_by_a_copy(loads):
    m = manager()
    tts, rvc = loads.spec("xtts", 2), loads.spec("hubert", 0.5)
    try:
        with m.recording() as events:
            with m.acquire_all({"tts": tts}, then=[rvc]):
                assert m.prefetcher is not None and m.prefetcher.wait_idle(WAIT_S)
                assert m.models()["hubert"].tier == "host"
                assert m.device.memory().allocated == 2 * GB  # never onto the device early
            with m.acquire_all({"rvc": rvc}):
                pass
        assert moves(events) == [
            ("load", "xtts"),
            ("prefetch", "hubert"),
            ("demote", "xtts"),
            ("promote", "hubert"),
            ("demote", "hubert"),
        ]
        assert loads.count == {"xtts": 1, "hubert": 1}
        assert m.device.peak_allocated() <= 2 * GB  # LOW: the largest stage, no more
    finally:
        m.close()


def test_prefetch_keeps_within_the_warm_budget(loads):
    m = manager(NormalPolicy(), warm_budget=3 * GB)
    try:
        old = loads.spec("old", 2)
        with m.acquire(old):
            pass
        m.relieve()  # evicted to host: 2 of the 3 GB
        assert m.models()["old"].tier == "host"
        with m.recording() as events:
            m.prefetcher.want([loads.spec("next", 2)])  # room is made by dropping "old"
            assert m.prefetcher.wait_idle(WAIT_S)
            m.prefetcher.want([loads.spec("huge", 4)])  # larger than the whole budget
            assert m.prefetcher.wait_idle(WAIT_S)
            m.prefetcher.want([loads.spec("liar", 0.5, actual_gb=2)])  # claims less than it is
            assert m.prefetcher.wait_idle(WAIT_S)
        views = m.models()
        assert views["next"].tier == "host" and views["old"].tier == "disk"
        assert "huge" not in loads.count, "a model that cannot fit must not even be read"
        assert views["liar"].tier == "disk"
        assert ("evict", "liar") in moves(events)
        assert sum(v.host_bytes for v in views.values()) <= 3 * GB
    finally:
        m.close()


def test_an_acquire_waits_for_the_read_in_flight_and_the_model_is_built_once(loads):
    m = manager()
    spec = loads.spec("f5tts", 1.5)
    loads.gate.clear()
    try:
        m.prefetcher.want([spec])
        assert loads.started.wait(WAIT_S)
        placed = threading.Event()

        def executor() -> None:
            with m.acquire(spec):
                placed.set()

        thread = threading.Thread(target=executor)
        thread.start()
        assert not placed.wait(0.2), "placed while its read was still in flight"
        loads.gate.set()
        thread.join(WAIT_S)
        assert placed.is_set()
        assert loads.count["f5tts"] == 1 and loads.overlaps == 0
        view = m.models()["f5tts"]
        assert view.loads == 1 and view.promotes == 1
    finally:
        loads.gate.set()
        m.close()


def test_shutdown_cancels_what_is_wanted_and_discards_the_read_in_flight(loads):
    m = manager()
    loads.gate.clear()
    m.prefetcher.want([loads.spec("a", 1), loads.spec("b", 1)])
    assert loads.started.wait(WAIT_S)
    closer = threading.Thread(target=m.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() must wait for the read in flight"
    loads.gate.set()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert loads.count == {"a": 1}, "nothing more is read after shutdown"
    assert m.models()["a"].tier == "disk" and m.device.memory().allocated == 0
    m.prefetcher.want([loads.spec("b", 1)])  # after close: ignored, no thread
    assert loads.count == {"a": 1}


def test_a_model_that_fails_to_load_is_left_for_the_jobs_own_acquire(loads):
    m = manager()
    loads.broken.add("voice")
    spec = loads.spec("voice", 0.1)
    try:
        m.prefetcher.want([spec])
        assert m.prefetcher.wait_idle(WAIT_S)
        assert m.models()["voice"].tier == "disk"
        with pytest.raises(ModelFileError, match="truncated"), m.acquire(spec):
            pass
    finally:
        m.close()


def test_a_model_in_use_or_in_memory_is_not_read_again(loads):
    m = manager(NormalPolicy())
    spec = loads.spec("xtts", 2)
    try:
        with m.acquire(spec):
            assert not m.warm(spec)  # in use, on the device
        assert not m.warm(spec)  # resident
        assert loads.count["xtts"] == 1
    finally:
        m.close()


def test_racing_stages_and_prefetches_never_read_a_model_twice_at_once(loads):
    """Random stage sequences under LOW with prefetch of the next stage: no model is read
    twice concurrently, each use finds its model, the device never holds more than the
    largest stage, and the warm tier never exceeds its budget."""
    rng = random.Random(7)
    sizes = {"xtts": 2.0, "f5tts": 1.5, "vocos": 0.1, "hubert": 0.4, "rmvpe": 0.2}
    stages = [["xtts"], ["f5tts", "vocos"], ["hubert", "rmvpe"], ["hubert"]]
    m = manager(warm_budget=3 * GB)
    specs = {k: loads.spec(k, gb) for k, gb in sizes.items()}
    largest = max(sum(sizes[k] for k in stage) for stage in stages)
    try:
        plan = [rng.choice(stages) for _ in range(60)]
        for i, stage in enumerate(plan):
            then = [specs[k] for k in plan[i + 1]] if i + 1 < len(plan) else []
            with m.acquire_all({k: specs[k] for k in stage}, then=then) as models:
                assert all(models[k].where == "device" for k in stage)
            host = sum(v.host_bytes for v in m.models().values())
            assert host <= 3 * GB
        assert loads.overlaps == 0
        assert m.device.peak_allocated() <= largest * GB
    finally:
        m.close()


def test_the_daemon_prefetches_the_next_jobs_first_model(tmp_path):
    settings = make_settings(tmp_path, low_vram=True)
    svc = unit_service(settings, device=FakeDevice(4 * GB))
    try:
        drop(svc.spool.inbox, "a.json", hello(tts={"engine": "noop", "options": {"work_s": 0.2}}))
        drop(svc.spool.inbox, "b.json", hello())  # espeak
        first = svc.executor.step()
        assert first is not None and first.job_id == "a"
        assert svc.manager.prefetcher.wait_idle(WAIT_S)
        second = svc.executor.step()
        assert second is not None and second.job_id == "b" and second.status == "done"
        espeak = [e.event for e in [*first.events, *second.events] if e.key == "espeak"]
        assert espeak == ["prefetch", "promote", "demote"]
    finally:
        svc.manager.close()


def test_the_host_copy_kept_for_a_promoted_model_counts_against_the_warm_budget(loads):
    """Under LOW a promoted model keeps its host copy (so going back is free): that copy is
    still host memory, and a prefetch must not push the warm tier past its budget."""
    m = manager(warm_budget=2 * GB)
    xtts, hubert = loads.spec("xtts", 1.5), loads.spec("hubert", 1)
    try:
        m.prefetcher.want([xtts])
        assert m.prefetcher.wait_idle(WAIT_S)
        with m.acquire(xtts):  # promoted from the warm tier, host copy kept
            assert not m.warm(hubert), "1.5 GB kept + 1 GB would pass the 2 GB budget"
        assert m.models()["xtts"].tier == "host"
        assert m.warm(hubert)  # now xtts (idle, in the warm tier) may make room
        assert m.models()["xtts"].tier == "disk" and m.models()["hubert"].tier == "host"
    finally:
        m.close()
