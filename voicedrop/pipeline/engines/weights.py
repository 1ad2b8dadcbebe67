"""Build a model without initialising its weights, then give it the checkpoint's tensors.

The libraries build their modules with a random initialisation that the checkpoint then
overwrites, and copy the checkpoint into them: for a real-size XTTS that was two thirds of a
cold load. Inside `empty_parameters()` every parameter is created on the meta device (no
memory, no initialisation); `assign()` then makes the checkpoint's own tensors the
parameters. With a memory-mapped checkpoint (`modelfiles.load_weights`) nothing is copied on
the CPU, and for a GPU each tensor is copied once, straight from the mapping to the device,
so a load never holds two full copies of the weights in host memory.

Buffers are built as usual: many are computed at construction (mel filter banks, windows,
rotary frequencies) and are not in the checkpoint; those that are get assigned too.
Requires torch; imported only by the loaders.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import torch

from voicedrop.errors import ModelFileError


class _EmptyParameters:
    """The patch of `nn.Module.register_parameter` behind `empty_parameters()`.

    Installed while any thread is inside the block, and effective only in those threads:
    a model built by the prefetch thread never empties the parameters of a module another
    thread constructs meanwhile (an engine's inference may build small modules)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._local = threading.local()
        self._original: Any = None

    def active(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def block(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._original = torch.nn.Module.register_parameter
                torch.nn.Module.register_parameter = self._patch()  # type: ignore[method-assign]
            self._users += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    torch.nn.Module.register_parameter = self._original  # type: ignore[method-assign]

    def _patch(self) -> Any:
        """A plain function (a bound method would not bind to the module it is called on)."""
        original = self._original

        def register(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
            if param is not None and not param.is_meta and self.active():
                extra = dict(param.__dict__)
                extra["requires_grad"] = param.requires_grad
                param = type(param)(param.to("meta"), **extra)
            original(module, name, param)

        return register


_EMPTY = _EmptyParameters()  # one per process, as nn.Module itself is


def empty_parameters() -> AbstractContextManager[None]:
    """Modules constructed inside (by this thread) get their parameters on the meta device.

    What accelerate's `init_empty_weights(include_buffers=False)` does, without needing
    accelerate for every engine. Thread-safe: other threads construct modules as usual.
    Call `assign()` after the block: inside it, the assigned tensors would go to meta too.
    """
    return _EMPTY.block()


def assign(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
) -> Any:
    """Load `state` into a module built under `empty_parameters()`, by assignment.

    Each tensor is converted to what the module declared for it (its dtype; `dtype` for
    floating-point ones when given, as the libraries' `model.to(dtype)` before loading
    does) and put on `device`, one tensor at a time; where nothing changes, the
    checkpoint's tensor itself becomes the parameter. The result is what
    `load_state_dict` with copying gives, bit for bit. A parameter or buffer the
    checkpoint leaves on the meta device is a ModelFileError naming it and `source`.
    """
    if _EMPTY.active():
        raise RuntimeError("assign() inside empty_parameters() would put the weights on meta")
    declared = module.state_dict(keep_vars=True)
    ready: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = modern_name(key, declared)
        want = declared.get(key)
        if want is None:
            ready[key] = value  # not the module's: load_state_dict reports it when strict
            continue
        target = dtype if dtype is not None and want.is_floating_point() else want.dtype
        ready[key] = value.to(device=device or value.device, dtype=target)
    # the class's method: a loader may have replaced the instance's with a call to this
    result = type(module).load_state_dict(module, ready, strict=strict, assign=True)
    missing = empty_tensors(module)
    if missing:
        raise ModelFileError(
            f"{source}: the checkpoint has no weights for {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)  # the buffers built on the CPU
    return result


LEGACY_WEIGHT_NORM = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}


def modern_name(key: str, declared: Mapping[str, Any]) -> str:
    """A checkpoint saved with torch's old hook-based weight norm names `x.weight_g` and
    `x.weight_v` what a module built with parametrizations calls
    `x.parametrizations.weight.original0/1` (torch's own compat hook maps them the same
    way); mapped here so that they are converted and placed like every other tensor."""
    if key in declared:
        return key
    for old, new in LEGACY_WEIGHT_NORM.items():
        if key.endswith(old) and key[: -len(old)] + new in declared:
            return key[: -len(old)] + new
    return key


def empty_tensors(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (never loaded)."""
    named = chain(module.named_parameters(), module.named_buffers())
    return [name for name, tensor in named if tensor.is_meta]
