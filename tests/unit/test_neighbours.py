"""A good neighbour on a shared card: a fake NVML shows another program on a 6 GB card (as
FakeDevice fakes the card); voicedrop keeps the headroom free for it, makes room when it
grows, takes the room back when it leaves, and a job that cannot fit beside it waits."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import pytest

from tests.unit.test_residency import spec
from voicedrop.card import NvmlCard
from voicedrop.config import GB
from voicedrop.errors import CardBusyError
from voicedrop.pipeline.neighbours import NeighbourWatch
from voicedrop.pipeline.policies import LowPolicy, NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice, FakeNvml

EDITOR = 4242  # the other program's pid
HEADROOM = 1 * GB


@dataclass
class Shared:
    manager: ResidencyManager
    device: FakeDevice
    nvml: FakeNvml
    watch: NeighbourWatch


def card(*, policy=None, context=0, card_wait_s=0.0, **kw):
    """A 6 GB fake card, the manager on it keeping `HEADROOM` free, and a watch (not
    started: tests call `check()` for one reading, or start its thread)."""
    device = FakeDevice(6 * GB)
    nvml = FakeNvml(device, context=context)
    manager = ResidencyManager(
        device,
        policy or NormalPolicy(),
        warm_budget=16 * GB,
        reserve=HEADROOM,
        card_wait_s=card_wait_s,
    )
    watch = NeighbourWatch(manager, NvmlCard(nvml), HEADROOM, frozenset({os.getpid()}), **kw)
    return Shared(manager, device, nvml, watch)


def held_by_all(nvml: FakeNvml) -> int:
    """What NVML says voicedrop and the others hold, plus the headroom kept for them."""
    reading = nvml.nvmlDeviceGetMemoryInfo(0)
    return reading.used + HEADROOM


def test_a_neighbour_growing_into_the_headroom_gets_it_back_and_models_return_when_it_leaves():
    c = card()
    for key in ("xtts", "rvc"):
        with c.manager.acquire(spec(key, 2)):
            pass
    assert c.manager.resident_keys() == {"xtts", "rvc"}  # NORMAL: they stay on the device
    c.nvml.neighbour(EDITOR, int(1.5 * GB))  # 4 + 1.5 of 6: into the 1 GB kept free
    c.watch.check()
    assert held_by_all(c.nvml) <= 6 * GB
    assert len(c.manager.resident_keys()) == 1  # one model went to the warm tier, not more
    assert c.manager.in_memory_keys() == {"xtts", "rvc"}  # nothing was dropped
    c.nvml.neighbour(EDITOR, 0)  # the editor quits
    c.watch.check()
    assert c.manager.resident_keys() == {"xtts", "rvc"}


def test_every_reading_keeps_voicedrop_the_neighbour_and_the_headroom_within_the_card():
    c = card()
    for key, gb in (("xtts", 2), ("rvc", 1), ("hubert", 0.5)):
        with c.manager.acquire(spec(key, gb)):
            pass
    for mb in (0, 300, 900, 1800, 2600, 4000, 4900, 3000, 1200, 0, 2000, 0):
        free = c.device.memory().free
        c.nvml.neighbour(
            EDITOR, min(mb * 2**20, free + c.device.others())
        )  # it gets only what's free
        c.watch.check()
        assert held_by_all(c.nvml) <= 6 * GB or not c.manager.resident_keys(), mb
        assert c.device.allocated + c.device.others() <= 6 * GB  # nobody ran out of memory


def test_models_in_use_stay_and_the_rest_make_room():
    c = card()
    with c.manager.acquire(spec("rvc", 1)):
        pass
    with c.manager.acquire(spec("xtts", 2)):
        c.nvml.neighbour(EDITOR, int(2.5 * GB))
        c.watch.check()
        assert c.manager.resident_keys() == {"xtts"}  # computing: it stays
    assert c.manager.models()["rvc"].tier == "host"


def test_an_idle_worker_whose_context_is_in_the_way_is_asked_to_end():
    ended = threading.Event()
    c = card(context=int(0.5 * GB), on_over=ended.set)
    c.nvml.neighbour(EDITOR, int(5 * GB))  # 5 + 0.5 (our context) + 1 headroom > 6
    c.watch.check()
    assert ended.is_set()


def test_no_neighbour_no_yield_even_when_our_own_job_fills_the_card():
    c = card()
    for key in ("xtts", "f5"):
        with c.manager.acquire(spec(key, 2.4)):
            pass
    c.watch.check()  # 4.8 of 6: into the headroom, but nobody else is there
    assert c.manager.resident_keys() == {"xtts", "f5"}


def test_admission_keeps_the_headroom_free_for_the_others():
    from voicedrop.errors import DoesNotFitError

    c = card(policy=LowPolicy())
    with c.manager.acquire(spec("big", 4.9)):  # 4.9 + 1 headroom <= 6
        pass
    assert c.manager.models()["big"].tier == "host"
    with pytest.raises(DoesNotFitError), c.manager.acquire(spec("bigger", 5.5)):
        pass  # it would fit the card, not beside the headroom kept for the others


def test_a_job_that_cannot_fit_beside_a_neighbour_waits_and_says_who_holds_the_card():
    c = card(card_wait_s=600)
    c.nvml.neighbour(EDITOR, int(4 * GB))
    c.watch.check()
    said: list[str] = []
    waiting = threading.Event()

    def stage(message: str) -> None:
        said.append(message)
        waiting.set()

    c.manager.on_wait = stage
    done = threading.Event()

    def job() -> None:
        with c.manager.acquire(spec("xtts", 2)):
            done.set()

    runner = threading.Thread(target=job)
    runner.start()
    assert waiting.wait(30)
    assert not done.is_set()
    c.nvml.neighbour(EDITOR, 0)
    c.watch.check()
    runner.join(30)
    assert done.is_set()
    assert (
        said[0].startswith("waiting for the card: ") and f"pid {EDITOR} holds 4.00 GB" in (said[0])
    )


def test_without_a_card_wait_the_job_fails_as_transient_naming_the_others():
    c = card(card_wait_s=0)
    c.nvml.neighbour(EDITOR, int(4 * GB))
    with pytest.raises(CardBusyError) as raised, c.manager.acquire(spec("xtts", 2)):
        pass
    assert raised.value.code == "card_busy" and "other processes hold 4.00 GB" in str(raised.value)


def test_a_model_larger_than_the_card_is_refused_at_once_not_waited_for():
    from voicedrop.errors import DoesNotFitError

    c = card(card_wait_s=600)
    c.nvml.neighbour(EDITOR, int(1 * GB))
    with pytest.raises(DoesNotFitError), c.manager.acquire(spec("huge", 5.5)):
        pass


def test_the_watch_thread_answers_a_neighbours_growth_by_itself():
    c = card(poll_s=0.02)
    with c.manager.acquire(spec("xtts", 2.5)):
        pass
    with c.manager.acquire(spec("rvc", 2)):
        pass
    c.watch.start()
    try:
        c.nvml.neighbour(EDITOR, int(1 * GB))
        while len(c.manager.resident_keys()) == 2:  # a state, not a guess of time
            time.sleep(0.01)
    finally:
        c.watch.close()
    assert held_by_all(c.nvml) <= 6 * GB


def test_an_inline_daemons_watch_reads_nothing_while_it_holds_nothing():
    c = card(poll_s=0.01)

    def turns(n: int) -> None:  # wait for the watch to poll n more times
        until = c.watch.turns + n
        while c.watch.turns < until:
            time.sleep(0.005)

    c.watch.start()
    try:
        with c.manager.acquire(spec("xtts", 1)):
            while c.nvml.reads == 0:  # holding a model: it reads
                time.sleep(0.01)
        c.manager.room.give(6 * GB, "test")  # nothing on the device any more
        turns(2)  # a reading begun before is over
        reads = c.nvml.reads
        turns(10)
    finally:
        c.watch.close()
    assert c.nvml.reads == reads  # idle: NVML is left alone (laptop GPUs may sleep)


def test_withheld_per_process_figures_fall_back_and_say_so():
    device = FakeDevice(6 * GB)
    device.neighbours[EDITOR] = GB
    nvml = FakeNvml(device)
    nvml.withheld = True
    found = NvmlCard(nvml)
    assert found.view() is None and "per-process" in (found.absent or "")


def test_without_an_nvidia_driver_the_card_says_why():
    pytest.importorskip("pynvml")
    found = NvmlCard()
    if found.view() is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert found.absent and found.absent.startswith("NVML: ")


def test_a_job_waiting_for_the_card_does_not_hold_its_resident_models_there():
    c = card(card_wait_s=600)
    with c.manager.acquire(spec("xtts", 2)):
        pass  # NORMAL: xtts stays on the device
    c.nvml.neighbour(EDITOR, int(2.5 * GB))  # 2 + 2.5 + 1 headroom: f5 (2 GB) cannot come
    waiting = threading.Event()
    c.manager.on_wait = lambda _m: waiting.set()

    def job() -> None:
        with c.manager.acquire_all({"a": spec("xtts", 2), "b": spec("f5", 2)}):
            pass

    runner = threading.Thread(target=job)
    runner.start()
    assert waiting.wait(30)
    c.nvml.neighbour(EDITOR, int(3.5 * GB))  # it grows on into the headroom
    c.watch.check()
    assert c.manager.models()["xtts"].tier == "host"  # made room though a job wants it
    c.nvml.neighbour(EDITOR, 0)
    c.watch.check()
    runner.join(30)
    assert not runner.is_alive() and c.manager.resident_keys() == {"xtts", "f5"}
