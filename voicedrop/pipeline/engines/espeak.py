"""The offline `espeak` engine: real, intelligible speech with no GPU and no weights.

libespeak-ng and its data come from the `espeakng-loader` wheel; we drive the
C API through ctypes in synchronous mode and collect the samples from the
synth callback. The library has process-global state, which is fine for a
single-threaded daemon. It speaks any language espeak-ng knows (the `lang/`
tree of its data), variants included (`en-us+f3`); it cannot clone a voice.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from voicedrop.config import Settings
from voicedrop.errors import ManifestError, StageError
from voicedrop.manifest import OptionValue, TTSSpec
from voicedrop.pipeline.audio import Audio, from_int16
from voicedrop.pipeline.engines.base import VoiceChoice, check_options
from voicedrop.pipeline.modelspec import ModelSpec

_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH = 1, 3
OPTIONS = {"rate": (80.0, 450.0), "pitch": (0.0, 99.0)}
_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakSynth:
    """An initialised libespeak-ng: the engine's 'model' (it owns no tensors)."""

    def __init__(self, library: str, data: str) -> None:
        self._lib = ctypes.CDLL(library)
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.sample_rate = self._lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sample_rate <= 0:
            raise StageError(f"libespeak-ng failed to initialise with data at {data}")
        self._chunks: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        self._callback = _Callback(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> Audio:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise StageError(f"espeak-ng has no voice '{voice}'", code="unknown_voice")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._chunks = []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(
            data, len(data) + 1, 0, 1, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if status != 0:
            raise StageError(f"espeak-ng synthesis failed with status {status}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return from_int16(samples, self.sample_rate)


class EspeakEngine:
    name = "espeak"

    def __init__(self, settings: Settings) -> None:
        import espeakng_loader

        self._library = espeakng_loader.get_library_path()
        self._data = espeakng_loader.get_data_path()
        self._voices: set[str] | None = None
        self.defaults = settings.engines.get("espeak", {})

    def version(self) -> str:
        from importlib.metadata import version

        return f"espeakng-loader {version('espeakng-loader')}"

    def voices(self) -> set[str]:
        """Language codes espeak-ng knows, lower-cased (e.g. 'en-us', 'pt-br', 'pt')."""
        if self._voices is None:
            lang = Path(self._data) / "lang"
            self._voices = {p.name.lower() for p in lang.rglob("*") if p.is_file()}
        return self._voices

    def _voice_id(self, voice: VoiceChoice, language: str) -> str | None:
        """The espeak voice for a request: the configured one, else the language tag,
        falling back from a regional tag ('pt-pt') to its language ('pt')."""
        wanted = (voice.engine_voice or language).lower().replace("_", "-")
        base, plus, variant = wanted.partition("+")
        for candidate in (base, base.split("-")[0]):
            if candidate in self.voices():
                return candidate + plus + variant
        return None

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        if voice.reference is not None and voice.engine_voice is None:
            raise ManifestError(
                "the espeak engine cannot clone a reference recording; name a configured "
                "voice or use a cloning engine",
                field="tts.voice",
            )
        if self._voice_id(voice, spec.language) is None:
            field = "tts.voice" if voice.engine_voice else "tts.language"
            wanted = voice.engine_voice or spec.language
            raise ManifestError(f"espeak-ng has no voice for '{wanted}'", field=field)
        check_options(spec.options, OPTIONS, "tts.options")

    def model_spec(self, voice: VoiceChoice, language: str) -> ModelSpec:
        return ModelSpec("espeak", lambda _device: EspeakSynth(self._library, self._data), 0)

    def synthesize(
        self,
        model: Any,
        text: str,
        voice: VoiceChoice,
        language: str,
        options: Mapping[str, OptionValue],
    ) -> Audio:
        opts = {**self.defaults, **check_options(options, OPTIONS, "tts.options")}
        voice_id = self._voice_id(voice, language)
        if voice_id is None:
            raise ManifestError(f"espeak-ng has no voice for '{language}'", field="tts.language")
        synth: EspeakSynth = model
        return synth.speak(text, voice_id, int(opts.get("rate", 175)), int(opts.get("pitch", 50)))
