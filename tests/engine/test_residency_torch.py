"""The residency manager with real torch modules on the CPU device."""

from __future__ import annotations

import gc
import weakref

import pytest

torch = pytest.importorskip("torch")

from voicedrop.pipeline.device import CPUDevice  # noqa: E402
from voicedrop.pipeline.modelspec import ModelSpec  # noqa: E402
from voicedrop.pipeline.policies import BudgetPolicy, LowPolicy, NormalPolicy  # noqa: E402
from voicedrop.pipeline.residency import ResidencyManager  # noqa: E402

VRAM_TYPES = {
    "available": bool,
    "low_vram_mode": bool,
    "allocated_gb": float,
    "reserved_gb": float,
    "free_gb": float,
    "total_gb": float,
    "cached_models": int,
}


class Voice(torch.nn.Module):
    """A small model with a buffer, like a normalisation statistic."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(256, 256)
        self.register_buffer("stats", torch.randn(1024))


class WithLatents:
    """An engine wrapper owning tensors outside any module (cached speaker latents)."""

    def __init__(self) -> None:
        self.net = Voice()
        self.latents = {"alice": torch.randn(32, 1024)}

    def tensors(self):
        yield from self.net.parameters()
        yield from self.net.buffers()
        yield from self.latents.values()

    def to(self, device: str) -> WithLatents:
        self.net.to(device)
        self.latents = {k: v.to(device) for k, v in self.latents.items()}
        return self


def module_bytes(m: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])


def make(policy, **kw):
    return ResidencyManager(CPUDevice(), policy, **kw)


def spec(key="voice", factory=Voice):
    return ModelSpec(key, lambda placement: factory().to(placement.build_on))


def test_acquire_yields_a_working_module_and_accounts_its_bytes():
    manager = make(NormalPolicy())
    with manager.acquire(spec()) as model:
        y = model.proj(torch.ones(1, 256))
        assert y.shape == (1, 256)
        allocated = manager.device.memory().allocated
    assert allocated == module_bytes(model)
    assert manager.models()["voice"].device_bytes == allocated


def test_wrapper_tensors_count_latents_too():
    manager = make(NormalPolicy())
    with manager.acquire(spec("xtts", WithLatents)) as model:
        pass
    assert manager.models()["xtts"].device_bytes == module_bytes(model.net) + 32 * 1024 * 4


@pytest.mark.parametrize(
    "policy, tier",
    [(NormalPolicy(), "device"), (BudgetPolicy(None, 0), "device"), (LowPolicy(), "host")],
)
def test_where_a_model_rests_under_each_policy(policy, tier):
    manager = make(policy, warm_tier=True)
    with manager.acquire(spec()):
        pass
    assert manager.models()["voice"].tier == tier


def test_after_a_drop_no_reference_to_the_module_survives():
    manager = make(LowPolicy(), warm_tier=False)
    with manager.acquire(spec()) as model:
        ref = weakref.ref(model)
        param_ref = weakref.ref(model.proj.weight)
    del model
    gc.collect()
    assert ref() is None and param_ref() is None
    assert manager.device.memory().allocated == 0


def test_demote_then_promote_returns_the_same_weights_bit_exact():
    manager = make(LowPolicy(), warm_tier=True)
    with manager.acquire(spec()) as model:
        before = {k: v.clone() for k, v in model.state_dict().items()}
    with manager.acquire(spec()) as again:  # a reload would build new random weights
        after = again.state_dict()
    assert manager.models()["voice"].loads == 1 and manager.models()["voice"].promotes == 1
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_a_rebuild_without_the_warm_tier_really_rebuilds():
    manager = make(LowPolicy(), warm_tier=False)
    with manager.acquire(spec()) as model:
        before = model.proj.weight.clone()
    with manager.acquire(spec()) as again:
        assert not torch.equal(before, again.proj.weight)
    assert manager.models()["voice"].loads == 2


def test_vram_stats_on_cpu_have_exactly_the_vram_keys_and_types():
    manager = make(LowPolicy(), low_vram_mode=True)
    with manager.acquire(spec()):
        stats = manager.get_vram_usage().model_dump()
    assert {k: type(v) for k, v in stats.items()} == VRAM_TYPES
    assert stats["available"] is False  # no CUDA
    assert stats["low_vram_mode"] is True
    assert stats["total_gb"] > 0


def test_a_kept_host_copy_brings_a_module_back_without_copying():
    """Under LOW a promoted model goes back to host memory after its stage: with its host
    tensors kept, that is a swap of references. The meta device stands in for a GPU: what
    comes back must be the very host tensors, values intact, buffers included."""
    from voicedrop.pipeline.device import HostCopies

    voice = Voice()
    weight, stats = voice.proj.weight.detach().clone(), voice.stats.clone()
    pointers = {voice.proj.weight.data_ptr(), voice.stats.data_ptr()}
    copies = HostCopies()
    copies.keep(voice)
    voice.to("meta")  # "on the device": the module no longer holds its host tensors
    assert voice.proj.weight.is_meta and voice in copies
    assert copies.restore(voice)
    assert voice not in copies and not copies.restore(voice)  # once only
    assert {voice.proj.weight.data_ptr(), voice.stats.data_ptr()} == pointers
    assert torch.equal(voice.proj.weight, weight) and torch.equal(voice.stats, stats)
    assert isinstance(voice.proj.weight, torch.nn.Parameter)
    y = voice.proj(torch.ones(1, 256))
    assert y.shape == (1, 256)
