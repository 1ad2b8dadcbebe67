"""The offline `espeak` engine: real, intelligible speech with no GPU and no weights.

libespeak-ng and its data come from the `espeakng-loader` wheel; we drive the
C API through ctypes in synchronous mode and collect the samples from the
synth callback. The library has process-global state, which is fine for a
single-threaded daemon. It speaks any language espeak-ng knows (the `lang/`
tree of its data), variants included (`en-us+f3`); it cannot clone a voice.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from voicedrop.config import Voice
from voicedrop.errors import ManifestError, StageError
from voicedrop.manifest import TTSSpec
from voicedrop.modelfiles import ModelFile
from voicedrop.pipeline.audio import Audio, from_int16
from voicedrop.pipeline.engines.base import (
    EngineConfig,
    EngineContext,
    Progress,
    TTSRequest,
    VoiceChoice,
    check_options,
    option_ranges,
)
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.text import sentences

_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH = 1, 3
_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Libespeak:
    """libespeak-ng, initialised once per process, with one synth callback for life.

    The C library keeps process-global state and calls back through the last pointer
    it was given. Initialising it again per model, and letting an earlier instance's
    ctypes callback be freed, crashed the whole process (a segfault, seen in CI after
    many services in one test run). So there is one instance per library path, and
    its callback collects into whatever list the current call provides.
    """

    def __init__(self, library: str, data: str) -> None:
        self.lib = ctypes.CDLL(library)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.sample_rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sample_rate <= 0:
            raise StageError(f"libespeak-ng failed to initialise with data at {data}")
        self.sink: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        self.callback = _Callback(self._collect)  # lives as long as the process
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            # a copy of the bytes: numpy's as_array would make (and ctypes keep forever) a
            # new array type for every distinct count, a few thousand per hundred jobs
            samples = ctypes.string_at(wav, count * 2)
            self.sink.append(np.frombuffer(samples, dtype=np.int16).copy())
        return 0


_LIBRARIES: dict[str, _Libespeak] = {}  # the C library's own process-global state, mirrored


def _libespeak(library: str, data: str) -> _Libespeak:
    if library not in _LIBRARIES:
        _LIBRARIES[library] = _Libespeak(library, data)
    return _LIBRARIES[library]


class EspeakSynth:
    """The engine's 'model': a handle on the process's libespeak-ng (it owns no tensors)."""

    def __init__(self, library: str, data: str) -> None:
        self._espeak = _libespeak(library, data)
        self.sample_rate = self._espeak.sample_rate

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> Audio:
        lib = self._espeak.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise StageError(f"espeak-ng has no voice '{voice}'", code="unknown_voice")
        lib.espeak_SetParameter(_RATE, rate, 0)
        lib.espeak_SetParameter(_PITCH, pitch, 0)
        chunks: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        self._espeak.sink = chunks
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if status != 0:
            raise StageError(f"espeak-ng synthesis failed with status {status}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return from_int16(samples, self.sample_rate)


class EspeakConfig(EngineConfig):
    """`[engines.espeak]`: defaults a manifest's `tts.options` may override."""

    rate: int = Field(175, ge=80, le=450, description="words per minute")
    pitch: int = Field(50, ge=0, le=99)


OPTIONS = option_ranges(EspeakConfig, "rate", "pitch")  # what a job may set


class EspeakEngine:
    name: ClassVar[str] = "espeak"
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ("espeakng_loader",)
    Config: ClassVar[type[EngineConfig]] = EspeakConfig

    def __init__(self, config: EspeakConfig, context: EngineContext) -> None:
        import espeakng_loader

        self.config = config
        self.context = context
        self._library = espeakng_loader.get_library_path()
        self._data = espeakng_loader.get_data_path()
        self._voices: set[str] | None = None

    def version(self) -> str:
        from importlib.metadata import version

        return f"espeakng-loader {version('espeakng-loader')}"

    def voices(self) -> set[str]:
        """Language codes espeak-ng knows, lower-cased (e.g. 'en-us', 'pt-br', 'pt')."""
        if self._voices is None:
            lang = Path(self._data) / "lang"
            self._voices = {p.name.lower() for p in lang.rglob("*") if p.is_file()}
        return self._voices

    def _voice_id(self, wanted: str) -> str | None:
        """The espeak voice for a voice id or language tag, falling back from a regional
        tag ('pt-pt') to its language ('pt'); a '+variant' is kept."""
        base, plus, variant = wanted.lower().replace("_", "-").partition("+")
        for candidate in (base, base.split("-")[0]):
            if candidate in self.voices():
                return candidate + plus + variant
        return None

    def files(self) -> list[ModelFile]:
        return []

    def check_voice(self, name: str, voice: Voice) -> None:
        if voice.references:
            raise self.context.invalid(
                f"voices.{name}.reference",
                [str(r) for r in voice.references],
                "the espeak engine cannot clone a recording; give engine_voice instead",
            )
        if voice.engine_voice is not None and self._voice_id(voice.engine_voice) is None:
            examples = ", ".join(sorted(v for v in self.voices() if "-" in v)[:6])
            raise self.context.invalid(
                f"voices.{name}.engine_voice",
                voice.engine_voice,
                f"espeak-ng has no voice '{voice.engine_voice}' (a language code such as "
                f"{examples} …, optionally with a variant like '+f3')",
            )

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        if voice.references and voice.engine_voice is None:
            raise ManifestError(
                "the espeak engine cannot clone a reference recording; name a configured "
                "voice or use a cloning engine",
                field="tts.voice",
            )
        if self._voice_id(voice.engine_voice or spec.language) is None:
            raise ManifestError(
                f"espeak-ng has no voice for '{spec.language}'", field="tts.language"
            )
        check_options(spec.options, OPTIONS, "tts.options")

    def models(self, request: TTSRequest) -> dict[str, ModelSpec]:
        return {"synth": ModelSpec("espeak", lambda _d: EspeakSynth(self._library, self._data), 0)}

    def deterministic(self, request: TTSRequest) -> bool:
        return True  # rules, not sampling: the same words and voice every time

    def stream(
        self, models: Mapping[str, Any], text: str, request: TTSRequest, progress: Progress
    ) -> Iterator[Audio]:
        """A sentence at a time: espeak-ng pauses at a sentence's end either way, and a
        listener hears the first sentence after its own synthesis time, not the text's."""
        opts = {
            "rate": float(self.config.rate),
            "pitch": float(self.config.pitch),
            **check_options(request.options, OPTIONS, "tts.options"),
        }
        voice_id = self._voice_id(request.voice.engine_voice or request.language)
        if voice_id is None:
            raise ManifestError(
                f"espeak-ng has no voice for '{request.language}'", field="tts.language"
            )
        synth: EspeakSynth = models["synth"]
        for sentence in sentences(text):
            yield synth.speak(sentence, voice_id, int(opts["rate"]), int(opts["pitch"]))
