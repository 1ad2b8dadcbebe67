"""The residency manager on a FakeDevice: policies, tiers, admission, the OOM ladder."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import VRAM_KEYS
from voicedrop.config import GB
from voicedrop.errors import (
    DoesNotFitError,
    OutOfMemoryError,
    PermanentError,
    ResidencyError,
    TransientError,
)
from voicedrop.pipeline.footprints import FootprintStore
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.policies import BudgetPolicy, LowPolicy, NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice, FakeModel, ManualClock


def make(policy=None, capacity=6 * GB, **kw) -> tuple[ResidencyManager, FakeDevice, ManualClock]:
    device, clock = FakeDevice(capacity), ManualClock(0.0)
    kw.setdefault("warm_budget", 16 * GB)
    manager = ResidencyManager(device, policy or LowPolicy(), clock=clock, **kw)
    return manager, device, clock


def spec(key, gb, clock=None, load_s=1.0, **kw):
    def load(_device):
        if clock is not None:
            clock.now += load_s
        return FakeModel(int(gb * GB))

    return ModelSpec(key, load, expected_bytes=int(gb * GB), **kw)


def kinds(events):
    return [(e.event, e.key, e.src, e.dst) for e in events]


def test_low_policy_demotes_after_use_and_promotes_next_time():
    manager, device, _ = make(LowPolicy(), warm_tier=True)
    with manager.recording() as events:
        with manager.acquire(spec("xtts", 2)) as model:
            assert model.where == "device"
            assert device.memory().allocated == 2 * GB
        assert device.memory().allocated == 0
        assert manager.models()["xtts"].tier == "host"
        with manager.acquire(spec("xtts", 2)):
            pass
    assert kinds(events) == [
        ("load", "xtts", "disk", "device"),
        ("demote", "xtts", "device", "host"),
        ("promote", "xtts", "host", "device"),
        ("demote", "xtts", "device", "host"),
    ]
    view = manager.models()["xtts"]
    assert (view.loads, view.promotes, view.host_bytes) == (1, 1, 2 * GB)


def test_low_policy_without_warm_tier_drops_and_reloads():
    manager, device, _ = make(LowPolicy(), warm_tier=False)
    for _ in range(2):
        with manager.acquire(spec("xtts", 2)):
            pass
    assert manager.models()["xtts"].loads == 2
    assert manager.models()["xtts"].tier == "disk"
    assert device.memory().allocated == 0


def test_normal_policy_keeps_models_loaded():
    manager, device, _ = make(NormalPolicy())
    with manager.recording() as events:
        for _ in range(3):
            with manager.acquire(spec("xtts", 2)):
                pass
    assert kinds(events) == [("load", "xtts", "disk", "device")]
    assert device.memory().allocated == 2 * GB
    assert manager.get_vram_usage().cached_models == 1


def test_normal_policy_evicts_when_the_device_is_short():
    manager, device, _ = make(NormalPolicy(), capacity=5 * GB)
    with manager.recording() as events:
        with manager.acquire(spec("xtts", 3)):
            pass
        with manager.acquire(spec("rvc:alice", 3)):
            pass
    assert kinds(events) == [
        ("load", "xtts", "disk", "device"),
        ("evict", "xtts", "device", "host"),
        ("load", "rvc:alice", "disk", "device"),
    ]
    assert device.release_calls >= 1  # cached blocks freed for the next load


def test_cached_blocks_are_released_only_when_a_load_needs_room():
    manager, device, _ = make(LowPolicy(), capacity=4 * GB)
    for _ in range(3):
        with manager.acquire(spec("xtts", 2)):
            pass
    assert device.release_calls == 0
    assert device.memory().reserved == 2 * GB  # freed blocks stay cached, visibly
    assert device.memory().allocated == 0


def test_in_low_mode_tts_leaves_before_rvc_arrives():
    manager, _, _ = make(LowPolicy(), low_vram_mode=True)
    with manager.recording() as events:
        with manager.acquire(spec("xtts", 3)):
            pass
        with manager.acquire(spec("rvc:alice", 1)):
            pass
    order = [(e.event, e.key) for e in events]
    assert order.index(("demote", "xtts")) < order.index(("load", "rvc:alice"))
    assert manager.get_vram_usage().low_vram_mode is True


def test_budget_evicts_the_cheapest_to_reload_first():
    manager, _, clock = make(BudgetPolicy(limit=5 * GB, headroom=0), capacity=16 * GB)
    with manager.acquire(spec("slow", 2, clock, load_s=10.0)):
        pass
    with manager.acquire(spec("fast", 2, clock, load_s=1.0)):
        pass
    with manager.recording() as events, manager.acquire(spec("new", 2, clock)):
        pass
    assert kinds(events)[0] == ("evict", "fast", "device", "host")
    assert manager.resident_keys() == {"slow", "new"}


def test_budget_evicts_the_longest_idle_when_costs_are_equal():
    manager, _, clock = make(BudgetPolicy(limit=5 * GB, headroom=0), capacity=16 * GB)
    with manager.acquire(spec("old", 2, clock)):
        pass
    clock.now += 100
    with manager.acquire(spec("recent", 2, clock)):
        pass
    with manager.recording() as events, manager.acquire(spec("new", 2, clock)):
        pass
    assert kinds(events)[0][:2] == ("evict", "old")


def test_a_fixed_budget_counts_model_bytes_and_headroom_only_on_the_device():
    manager, _, _ = make(BudgetPolicy(limit=4 * GB, headroom=GB), capacity=16 * GB, headroom=GB)
    with manager.acquire(spec("xtts", 4)) as model:
        assert model.where == "device"


def test_a_pinned_model_is_never_evicted():
    manager, _, _ = make(BudgetPolicy(limit=5 * GB, headroom=0), capacity=16 * GB)
    with manager.acquire(spec("vocos", 3, pinned=True)):
        pass
    with pytest.raises(ResidencyError, match="does not fit"), manager.acquire(spec("xtts", 3)):
        pass
    assert manager.resident_keys() == {"vocos"}


def test_admission_refuses_a_model_larger_than_the_device_early():
    manager, device, _ = make(capacity=4 * GB, headroom=GB // 2)
    loaded = []
    big = ModelSpec("f5tts", lambda d: loaded.append(d) or FakeModel(5 * GB), expected_bytes=5 * GB)
    with pytest.raises(DoesNotFitError) as err, manager.acquire(big):
        pass
    assert not loaded, "the loader must not run for a model that cannot fit"
    assert isinstance(err.value, PermanentError) and err.value.kind == "permanent"
    assert not isinstance(err.value, TransientError)
    assert "needs 5.00 GB of weights + 0.00 GB working memory + 0.50 GB headroom" in (
        err.value.message
    )
    assert "of 4.00 GB" in err.value.message
    assert device.memory().allocated == 0


def test_measured_peak_is_stored_and_predicts_the_next_admission(tmp_path):
    store = FootprintStore(tmp_path / "footprints.json")
    manager, device, _ = make(NormalPolicy(), footprints=store)
    with manager.acquire(spec("xtts", 1)):
        device.allocate(3 * GB)  # activations during inference
        device.free(3 * GB)
    saved = json.loads((tmp_path / "footprints.json").read_text())["xtts"]
    assert saved == {"peak": 4 * GB, "weights": 1 * GB}
    fresh, _, _ = make(
        NormalPolicy(), footprints=FootprintStore(tmp_path / "footprints.json"), headroom=GB
    )
    assert fresh.predict(spec("xtts", 1)) == 4 * GB


def test_measured_peak_is_the_models_own_even_when_others_were_evicted():
    manager, device, _ = make(NormalPolicy(), capacity=4 * GB)
    with manager.acquire(spec("xtts", 3)):
        pass
    rvc = ModelSpec("rvc:alice", lambda _d: FakeModel(GB), expected_bytes=3 * GB)
    with manager.acquire(rvc):  # 1 GB of weights + 2 GB working memory: xtts must go
        device.allocate(2 * GB)
        device.free(2 * GB)
    assert manager.models()["rvc:alice"].last_peak_bytes == 3 * GB


def test_estimate_from_checkpoint_size_without_a_measurement(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"\0" * 1000)
    manager, _, _ = make()
    assert manager.predict(ModelSpec("x", lambda d: None, checkpoint=ckpt)) == 1200


def test_oom_on_load_evicts_the_others_and_retries_once():
    manager, device, _ = make(NormalPolicy(), capacity=8 * GB)
    with manager.acquire(spec("xtts", 2)):
        pass
    device.inject_oom()
    with manager.recording() as events, manager.acquire(spec("rvc:alice", 1)) as model:
        assert model.where == "device"
    assert kinds(events) == [
        ("evict", "xtts", "device", "host"),
        ("load", "rvc:alice", "disk", "device"),
    ]
    assert device.release_calls >= 1


def test_oom_twice_fails_transient_and_memory_returns_to_baseline():
    manager, device, _ = make(NormalPolicy(), capacity=8 * GB)
    baseline = device.memory().allocated
    device.inject_oom()
    original = device._check

    def always_oom(n):
        device.inject_oom()
        original(n)

    device._check = always_oom  # type: ignore[method-assign]
    with pytest.raises(OutOfMemoryError) as err, manager.acquire(spec("xtts", 2)):
        pass
    assert isinstance(err.value, TransientError) and err.value.kind == "transient"
    assert device.memory().allocated == baseline
    assert manager.models()["xtts"].tier == "disk"


def test_warm_tier_budget_drops_the_least_valuable_first():
    manager, _, clock = make(LowPolicy(), warm_budget=3 * GB)
    with manager.acquire(spec("xtts", 2, clock)):
        pass
    clock.now += 10
    with manager.recording() as events, manager.acquire(spec("rvc:alice", 2, clock)):
        pass
    assert kinds(events) == [
        ("load", "rvc:alice", "disk", "device"),
        ("evict", "xtts", "host", "disk"),
        ("demote", "rvc:alice", "device", "host"),
    ]
    assert manager.models()["xtts"].tier == "disk"


def test_model_larger_than_the_warm_budget_is_dropped_not_demoted():
    manager, _, _ = make(LowPolicy(), warm_budget=1 * GB)
    with manager.recording() as events, manager.acquire(spec("xtts", 2)):
        pass
    assert kinds(events)[-1] == ("drop", "xtts", "device", "disk")


def test_nested_acquire_of_the_same_model_loads_once():
    manager, _, _ = make(LowPolicy())
    with (
        manager.recording() as events,
        manager.acquire(spec("f5tts", 1)) as outer,
        manager.acquire(spec("f5tts", 1)) as inner,
    ):
        assert outer is inner
    assert [e.event for e in events] == ["load", "demote"]


def test_an_error_inside_the_block_still_releases_the_model():
    manager, device, _ = make(LowPolicy())
    with pytest.raises(RuntimeError), manager.acquire(spec("xtts", 2)):
        raise RuntimeError("engine crashed")
    assert device.memory().allocated == 0
    assert manager.models()["xtts"].tier == "host"


def test_vram_stats_have_exactly_the_vram_keys_and_types():
    manager, _, _ = make(low_vram_mode=True)
    with manager.acquire(spec("xtts", 2)):
        stats = manager.get_vram_usage().model_dump()
    assert set(stats) == VRAM_KEYS
    assert stats["available"] is True and stats["low_vram_mode"] is True
    assert stats["allocated_gb"] == 2.0 and stats["total_gb"] == 6.0
    assert stats["free_gb"] == 4.0 and isinstance(stats["cached_models"], int)
    for key in ("allocated_gb", "reserved_gb", "free_gb", "total_gb"):
        assert isinstance(stats[key], float)


def test_close_drops_everything():
    manager, device, _ = make(NormalPolicy())
    with manager.acquire(spec("xtts", 2)):
        pass
    manager.close()
    assert device.memory().allocated == 0 and device.memory().reserved == 0
    assert manager.get_vram_usage().cached_models == 0


def test_keep_alive_lets_idle_models_leave_the_gpu_on_time_under_normal():
    manager, device, clock = make(NormalPolicy(), keep_alive=300.0)
    with manager.acquire(spec("xtts", 2)):
        clock.now = 1000.0
        assert manager.expire() == []  # in use: never
        assert manager.models()["xtts"].leaves_in_s is None
    with manager.acquire(spec("vocos", 1)):
        pass
    clock.now = 1299.0
    assert manager.expire() == []
    assert manager.models()["xtts"].leaves_in_s == 1.0
    assert device.memory().allocated == 3 * GB  # NORMAL keeps them until then
    clock.now = 1300.0
    with manager.recording() as events:
        assert manager.expire() == ["xtts", "vocos"]
    assert device.memory().allocated == 0
    assert [(e.event, e.key, e.reason) for e in events] == [
        ("demote", "xtts", "keep_alive"),
        ("demote", "vocos", "keep_alive"),
    ]
    assert manager.models()["xtts"].tier == "host"  # the next use is a promote


def test_without_keep_alive_normal_keeps_models_forever():
    manager, device, clock = make(NormalPolicy())
    with manager.acquire(spec("xtts", 2)):
        pass
    clock.now = 10**7
    assert manager.expire() == [] and device.memory().allocated == 2 * GB


def test_a_model_is_placed_while_another_thread_is_still_importing_torch(monkeypatch):
    """The prefetcher's first load imports torch; the main thread placing a model meanwhile
    saw a half-initialised torch without `nn` and failed the job (internal_error)."""
    import sys
    import types

    from voicedrop.pipeline.device import CPUDevice

    half_imported = types.ModuleType("torch")  # what sys.modules holds mid-import
    monkeypatch.setitem(sys.modules, "torch", half_imported)
    device = CPUDevice()
    placed = device.to_device(object())  # the espeak engine's model: no tensors
    assert device.memory().allocated == 0 and placed is not None


def test_a_jobs_own_keep_alive_overrides_the_policy_both_ways():
    """Ollama's keep_alive per request: 0 leaves at once under NORMAL, -1 stays under LOW,
    N seconds stays N seconds idle; a job that names none goes back to the policy."""
    manager, device, clock = make(NormalPolicy(), warm_tier=True)
    xtts = spec("xtts", 2)
    manager.keep_alive_for([xtts], 0.0)
    with manager.acquire(xtts):
        pass
    assert manager.models()["xtts"].tier == "host" and device.memory().allocated == 0
    manager.keep_alive_for([xtts], 60.0)
    with manager.acquire(xtts):
        pass
    assert manager.models()["xtts"].leaves_in_s == 60.0
    clock.now += 59.0
    assert manager.expire() == []
    clock.now += 1.0
    assert manager.expire() == ["xtts"] and manager.models()["xtts"].tier == "host"

    low, _, clock = make(LowPolicy(), warm_tier=True, keep_alive=30.0)
    f5 = spec("f5tts", 1)
    low.keep_alive_for([f5], math.inf)
    with low.acquire(f5):
        pass
    clock.now += 3600
    assert low.expire() == [] and low.models()["f5tts"].tier == "device"
    assert low.models()["f5tts"].keep_alive_s == -1.0 and low.models()["f5tts"].leaves_in_s is None
    low.keep_alive_for([f5], None)  # the next job names none: LOW's own rule again
    with low.acquire(f5):
        pass
    assert low.models()["f5tts"].tier == "host"


def test_load_puts_a_model_on_the_device_ahead_of_its_jobs_and_unload_frees_it():
    manager, device, _ = make(LowPolicy(), warm_tier=True)
    manager.load(spec("xtts", 2))
    assert manager.models()["xtts"].tier == "device" and device.memory().allocated == 2 * GB
    assert manager.unload("xtts") and manager.models()["xtts"].tier == "disk"
    assert device.memory().allocated == 0 and not manager.unload("xtts")
    manager.load(spec("xtts", 2), keep_alive=0.0)  # read into memory, not onto the device
    assert manager.models()["xtts"].tier == "host"
