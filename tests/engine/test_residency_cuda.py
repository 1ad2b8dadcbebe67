"""The residency manager on a real CUDA device. Skipped where there is no GPU;
benchmarks/gpu_check.sh runs it on the lent GPU machine (with --noconftest)."""

from __future__ import annotations

import gc

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from voicedrop.pipeline.cuda import CudaDevice  # noqa: E402
from voicedrop.pipeline.modelspec import ModelSpec  # noqa: E402
from voicedrop.pipeline.policies import LowPolicy, NormalPolicy  # noqa: E402
from voicedrop.pipeline.residency import ResidencyManager  # noqa: E402

MB = 1024**2


def net() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 2048))
    model.register_buffer("stats", torch.randn(4096))
    return model


def spec() -> ModelSpec:
    return ModelSpec("net", lambda placement: net().to(placement.build_on))


def baseline() -> int:
    gc.collect()
    return torch.cuda.memory_allocated()


def test_low_demotes_to_pinned_host_memory_and_promotes_bit_exact():
    manager = ResidencyManager(CudaDevice(), LowPolicy(), warm_tier=True)
    base = baseline()
    with manager.acquire(spec()) as model:
        assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
        before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(not t.is_cuda and t.is_pinned() for t in [*model.parameters(), *model.buffers()])
    assert baseline() - base <= sum(v.numel() * v.element_size() for v in before.values())
    with manager.acquire(spec()) as again:
        for key, value in again.state_dict().items():
            assert torch.equal(value, before[key]), key
    assert manager.models()["net"].loads == 1 and manager.models()["net"].promotes == 1
    del before, again, model
    manager.close()
    assert baseline() == base


def test_drop_returns_device_memory_to_its_baseline():
    manager = ResidencyManager(CudaDevice(), LowPolicy(), warm_tier=False)
    base = baseline()
    with manager.acquire(spec()) as model:
        assert torch.cuda.memory_allocated() - base >= 2 * 2048 * 2048 * 4
    del model
    assert baseline() == base


def test_peak_includes_working_memory_and_vram_stats_see_the_gpu():
    manager = ResidencyManager(CudaDevice(), NormalPolicy())
    with manager.acquire(spec()) as model:
        scratch = torch.empty(64 * MB, dtype=torch.uint8, device="cuda")
        stats = manager.get_vram_usage().model_dump()
        del scratch
    weights = manager.models()["net"].device_bytes
    assert manager.models()["net"].last_peak_bytes >= weights + 64 * MB
    assert stats["available"] is True and stats["total_gb"] > 0
    assert stats["allocated_gb"] >= round(weights / 1024**3, 3)
    del model
    manager.close()


def test_nvml_sees_other_processes_when_installed():
    pytest.importorskip("pynvml")
    assert CudaDevice().other_processes_bytes() is not None


def test_a_promoted_model_goes_back_to_its_own_pinned_tensors_without_a_copy():
    """Under LOW the second use is a promote that keeps the host tensors: its demote points
    the module back at the very same pinned tensors, and the GPU returns to its baseline."""
    manager = ResidencyManager(CudaDevice(), LowPolicy(), warm_tier=True)
    base = baseline()
    with manager.acquire(spec()):
        pass
    host = [t.data_ptr() for t in manager._entries["net"].model.parameters()]
    with manager.recording() as events, manager.acquire(spec()) as model:
        assert all(t.is_cuda for t in model.parameters())
        before = {k: v.clone() for k, v in model.state_dict().items()}
    back = list(manager._entries["net"].model.parameters())
    assert [t.data_ptr() for t in back] == host and all(t.is_pinned() for t in back)
    for key, value in manager._entries["net"].model.state_dict().items():
        assert torch.equal(value, before[key].cpu()), key
    [demote] = [e for e in events if e.event == "demote"]
    [promote] = [e for e in events if e.event == "promote"]
    assert demote.seconds < promote.seconds
    del before, model, back
    assert baseline() - base == 0
    manager.close()
