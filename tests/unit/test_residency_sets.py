"""Sets of models acquired together, admission of resident models, per-block peaks.

On a FakeDevice that accounts bytes and raises out-of-memory like a GPU; the
property test drives random job sequences the way the real engines use the
manager: a stage acquires its set, then allocates working memory inside.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import stress
from voicedrop.config import GB
from voicedrop.errors import OutOfMemoryError
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.policies import BudgetPolicy, LowPolicy, NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice, FakeModel, FakeOutOfMemory

MB = 1024**2


def spec(key: str, weights: int, working: int = 0) -> ModelSpec:
    return ModelSpec(
        key, lambda _d: FakeModel(weights), expected_bytes=weights + working, working_bytes=working
    )


def events(manager, block):
    with manager.recording() as out:
        block()
    return [(e.event, e.key) for e in out]


def test_a_set_is_placed_in_order_and_released_in_reverse_under_low():
    manager = ResidencyManager(FakeDevice(4 * GB), LowPolicy())
    specs = {"voice": spec("rvc:alice", GB // 8), "hubert": spec("hubert", GB // 2)}

    def job():
        with manager.acquire_all(specs) as models:
            assert set(models) == {"voice", "hubert"}
            assert all(m.where == "device" for m in models.values())

    assert events(manager, job) == [
        ("load", "rvc:alice"),
        ("load", "hubert"),
        ("demote", "hubert"),
        ("demote", "rvc:alice"),
    ]
    assert manager.resident_keys() == set()


def test_a_shared_model_is_one_key_loaded_once_across_voices():
    manager = ResidencyManager(FakeDevice(4 * GB), LowPolicy())
    for voice in ("alice", "bob", "alice"):
        with manager.acquire_all({"voice": spec(f"rvc:{voice}", MB), "hubert": spec("hubert", GB)}):
            pass
    views = manager.models()
    assert views["hubert"].loads == 1 and views["hubert"].promotes == 2
    assert views["rvc:alice"].loads == 1 and views["rvc:bob"].loads == 1


def test_a_set_that_cannot_fit_together_is_refused_before_any_load():
    device = FakeDevice(2 * GB)
    manager = ResidencyManager(device, NormalPolicy())
    loaded: list[str] = []
    specs = {
        k: ModelSpec(k, lambda _d, k=k: loaded.append(k) or FakeModel(GB), expected_bytes=GB)
        for k in ("f5tts", "vocos", "asr")
    }
    with (
        pytest.raises(Exception, match="'f5tts' \\+ 'vocos' \\+ 'asr' does not fit"),
        manager.acquire_all(specs),
    ):
        pass
    assert loaded == [] and device.memory().allocated == 0


def test_resident_model_gets_its_working_memory_before_the_block_starts():
    """The case from the issue: XTTS resident, small models beside it, then XTTS again."""
    device = FakeDevice(int(3.5 * GB))
    manager = ResidencyManager(
        device, BudgetPolicy(None, GB // 2), headroom=GB // 2, warm_budget=8 * GB
    )
    xtts = spec("xtts", int(1.9 * GB), int(0.8 * GB))
    with manager.acquire(xtts):
        device.allocate(int(0.8 * GB))
        device.free(int(0.8 * GB))
    small = {"hubert": spec("hubert", 360 * MB), "rmvpe": spec("rmvpe", 180 * MB)}
    small |= {f"v{i}": spec(f"rvc:{i}", 50 * MB) for i in range(4)}
    small["vocos"] = spec("vocos", 54 * MB)
    with manager.acquire_all(small):
        pass
    assert "xtts" in manager.resident_keys()
    with manager.acquire(xtts):  # must evict small models first, not fail inside
        device.allocate(int(0.8 * GB))
        device.free(int(0.8 * GB))
    assert "xtts" in manager.resident_keys()


def test_an_outer_models_footprint_keeps_working_memory_from_before_a_nested_acquire():
    device = FakeDevice(8 * GB)
    manager = ResidencyManager(device, NormalPolicy())
    with manager.acquire(spec("f5tts", GB)):
        device.allocate(2 * GB)  # working memory of the outer model ...
        device.free(2 * GB)
        with manager.acquire(spec("vocos", GB // 4)):  # ... then a nested acquire resets counters
            pass
    views = manager.models()
    assert views["f5tts"].last_peak_bytes is not None
    assert views["f5tts"].last_peak_bytes >= 3 * GB
    assert views["vocos"].last_peak_bytes == GB // 4


def test_out_of_memory_while_placing_a_set_evicts_others_and_retries():
    device = FakeDevice(4 * GB)
    manager = ResidencyManager(device, NormalPolicy())
    with manager.acquire(spec("xtts", 2 * GB)):
        pass
    device.inject_oom(after=1)  # the second placement of the set fails once
    with (
        manager.recording() as out,
        manager.acquire_all({"a": spec("hubert", GB // 2), "b": spec("rvc:x", GB // 4)}),
    ):
        pass
    assert ("evict", "xtts") in [(e.event, e.key) for e in out]
    assert {"hubert", "rvc:x"} <= manager.resident_keys()


# ---- the property --------------------------------------------------------------------

STAGES = {
    "xtts": ["xtts"],
    "f5": ["f5tts", "vocos"],
    "rvc-pm": ["hubert", "rvc:a"],
    "rvc-rmvpe": ["hubert", "rmvpe", "rvc:b"],
    "rvc-c": ["hubert", "rvc:c"],
}
JOBS = [("xtts", None), ("f5", None), ("xtts", "rvc-pm"), ("f5", "rvc-rmvpe"), ("xtts", "rvc-c")]
sizes = st.integers(min_value=10, max_value=2000).map(lambda m: m * MB)


@st.composite
def scenario(draw):
    keys = sorted({k for members in STAGES.values() for k in members})
    weights = {k: draw(sizes) for k in keys}
    working = {k: draw(st.integers(0, 1000)) * MB for k in keys}
    need = {
        name: sum(weights[k] for k in members) + max(working[k] for k in members)
        for name, members in STAGES.items()
    }
    headroom = draw(st.sampled_from([0, 256 * MB, 512 * MB]))
    largest = max(need.values()) + headroom
    capacity = largest + draw(st.integers(0, 4000)) * MB
    policy = draw(st.sampled_from(["low", "normal", "budget-auto", "budget-fixed"]))
    budget = max(sum(weights[k] for k in m) for m in STAGES.values()) + draw(sizes)
    jobs = draw(st.lists(st.sampled_from(JOBS), min_size=1, max_size=30))
    return weights, working, headroom, capacity, policy, budget, jobs


@settings(max_examples=stress(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_no_sequence_runs_out_of_memory_when_every_stage_fits(case):
    weights, working, headroom, capacity, policy_name, budget, jobs = case
    assume(budget + headroom <= capacity or policy_name != "budget-fixed")
    policy = {
        "low": LowPolicy(),
        "normal": NormalPolicy(),
        "budget-auto": BudgetPolicy(None, headroom),
        "budget-fixed": BudgetPolicy(budget, headroom),
    }[policy_name]
    device = FakeDevice(capacity)
    manager = ResidencyManager(device, policy, headroom=headroom, warm_budget=64 * GB)
    specs = {k: spec(k, weights[k], working[k]) for k in weights}
    used: dict[str, int] = {}
    for job in jobs:
        for stage in filter(None, job):
            members = STAGES[stage]
            scratch = max(working[k] for k in members)
            try:
                with manager.acquire_all({k: specs[k] for k in members}):
                    if policy_name == "budget-fixed":
                        assert device.allocated <= budget
                    device.allocate(scratch)
                    device.free(scratch)
            except (FakeOutOfMemory, OutOfMemoryError) as exc:  # pragma: no cover - the bug
                pytest.fail(f"{policy_name}: out of memory in stage {stage}: {exc}")
            for k in members:
                used[k] = max(used.get(k, 0), scratch)
            if policy_name == "low":
                assert manager.resident_keys() == set(), "LOW kept a model on the device"
    for key in manager.models():
        recorded = manager.footprints.get(key)
        assert recorded is not None and recorded.peak >= weights[key] + used[key]
