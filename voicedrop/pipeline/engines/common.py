"""What the model-backed engines share: confined model paths, reference audio, quiet libraries."""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from voicedrop.errors import ManifestError, ModelFileError
from voicedrop.modelfiles import confine, confine_tree
from voicedrop.pipeline.audio import Audio, resample
from voicedrop.pipeline.engines.base import EngineContext


def model_path(context: EngineContext, key: str, value: Path | None) -> Path | None:
    """A configured model path, absolute and inside the model roots; else ConfigError."""
    if value is None:
        return None
    try:
        return confine(context.resolve(value), context.model_roots)
    except ValueError as exc:
        raise context.invalid(key, str(value), str(exc)) from None


def loadable(context: EngineContext, path: Path) -> Path:
    """Just before a load: the file (or every entry of the directory) a loader is about to
    open is still inside the model roots, symlinks resolved — a file replaced by a symlink
    after start-up, or a symlink inside a configured directory, is refused by name."""
    try:
        resolved = confine(path, context.model_roots)
    except ValueError as exc:
        raise ModelFileError(f"refused: {exc}") from None
    if resolved.is_dir():
        confine_tree(resolved, context.model_roots)
    return resolved


# The most of a reference recording any engine decodes: XTTS conditions on its first
# `max_ref_len` s (30), F5-TTS clips it to 12 s at its silences. The byte limit alone does
# not bound the decoded size: an hour of silence is half a megabyte of FLAC, so 50 MB of
# it would decode to tens of gigabytes and take the host's memory with the daemon.
REFERENCE_READ_S = 120.0
REFERENCE_READ_SAMPLES = int(REFERENCE_READ_S * 48_000 * 2)  # all channels together


def decode_reference(
    path: Path, dtype: str, max_seconds: float = REFERENCE_READ_S
) -> tuple[np.ndarray[Any, Any], int]:
    """The first `max_seconds` of a reference recording as (frames, channels) samples, and
    its rate; never more than REFERENCE_READ_SAMPLES samples in all, whatever its header
    claims (many channels at a high rate get fewer seconds)."""
    try:
        with sf.SoundFile(str(path)) as audio:
            channels = max(1, audio.channels)
            frames = min(int(max_seconds * audio.samplerate), REFERENCE_READ_SAMPLES // channels)
            data = audio.read(frames, dtype=dtype, always_2d=True)
            return data, int(audio.samplerate)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ManifestError(
            f"reference {path.name} is not readable audio: {exc}", field="tts.voice"
        ) from None


def read_reference(path: Path, rate: int, max_seconds: float = REFERENCE_READ_S) -> Audio:
    """A reference recording's first `max_seconds` as mono float32 at `rate` (soundfile:
    no torchaudio, no ffmpeg)."""
    data, source_rate = decode_reference(path, "float32", max_seconds)
    mono = data.mean(axis=1).astype(np.float32)
    if mono.size < source_rate // 3:
        raise ManifestError(
            f"reference {path.name} is too short "
            f"({mono.size / source_rate:.2f} s; at least 0.33 s)",
            field="tts.voice",
        )
    return resample(Audio(mono, int(source_rate)), rate)


class _QuietStdout:
    """stdout sent to stderr while any thread is inside `quiet_stdout()`: the first to
    enter swaps it, the last to leave puts it back (two threads nesting
    `redirect_stdout` would restore each other's stream, leaving stdout redirected)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: Any = None

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved, sys.stdout = sys.stdout, sys.stderr
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    sys.stdout, self._saved = self._saved, None


_QUIET = _QuietStdout()  # one per process, as sys.stdout is


def quiet_stdout() -> contextlib.AbstractContextManager[None]:
    """Engine libraries print progress to stdout; keep stdout for our own output (JSON)."""
    return _QUIET.block()


def load_failed(path: Path, exc: BaseException) -> ModelFileError:
    """A library's loader failed on a file we handed it: say which file, and why."""
    if isinstance(exc, ModelFileError):
        return exc
    mismatch = state_dict_mismatch(str(exc))
    if mismatch:
        return ModelFileError(f"{path}: does not match its config: {mismatch}")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelFileError(f"{path}: cannot be loaded: {type(exc).__name__}: {first[:300]}")


_KEYS = re.compile(r'"([^"]+)"')
_SHAPE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
    r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)
SHOWN = 3  # keys named per kind; the count says how many more


def state_dict_mismatch(message: str) -> str:
    """torch's `load_state_dict` error, one key per line, as one line a report can hold:
    how many keys are missing, unexpected or of another shape, and the first few of each
    (the first line alone, "Error(s) in loading state_dict for Xtts:", says nothing)."""
    if not message.startswith("Error(s) in loading state_dict"):
        return ""
    parts: list[str] = []
    for label, prefix in (("missing", "Missing key(s)"), ("unexpected", "Unexpected key(s)")):
        keys = [k for line in message.splitlines() if line.strip().startswith(prefix)
                for k in _KEYS.findall(line)]  # fmt: skip
        if keys:
            parts.append(f"{len(keys)} {label} ({_first(keys)})")
    shapes = [f"{key} [{ours}] in the file, [{model}] in the model"
              for key, ours, model in _SHAPE.findall(message)]  # fmt: skip
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({_first(shapes)})")
    return "; ".join(parts) or message.splitlines()[0]


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown}, and {len(items) - SHOWN} more"


def drop_scratch(module: Any) -> int:
    """Forget tensors a forward pass left in plain module attributes — RVC's attention
    layers keep their last attention map as `attn`, XTTS's GPT its last conditioning as
    `cached_prefix_emb`, RMVPE's mel front end its Hann windows in a dict keyed by device:
    neither parameter nor buffer, `.to()` never moves them, so they would stay on the GPU
    after the model left it, counted nowhere. The libraries make them again on the next
    pass. Returns how many were dropped."""
    import torch

    dropped = 0
    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor):
                setattr(sub, name, None)
                dropped += 1
            elif isinstance(value, dict) and not name.startswith("_"):  # not torch's own
                cached = [k for k, v in value.items() if isinstance(v, torch.Tensor)]
                for key in cached:
                    del value[key]
                dropped += len(cached)
    return dropped


def module_device(model: Any) -> Any:
    """The device a module's parameters live on (where inputs must go)."""
    return next(model.parameters()).device
