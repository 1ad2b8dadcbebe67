"""F5-TTS: flow-matching DiT plus the Vocos vocoder, each its own residency key.

Loaded as `f5_tts.infer.utils_infer.load_model` and `load_vocoder(is_local=True)` load
them, from local files, but built without random initialisation (f5tts_load.py); nothing
reaches for a hub. A voice is a reference recording and what is said in it: a configured
voice carries `reference_text`, a job that brings its own recording gives
`tts.reference_text`. Without a text, a local ASR model (Whisper in the transformers
layout, `asr_dir`, residency key `asr`) transcribes the reference, if one is configured;
otherwise the job fails naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from voicedrop.config import GB, Voice
from voicedrop.errors import EngineUnavailableError, ManifestError, ModelFileError
from voicedrop.manifest import TTSSpec
from voicedrop.modelfiles import HashCheck, ModelFile, require_files
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines.base import (
    EngineConfig,
    EngineContext,
    Progress,
    TTSRequest,
    VoiceChoice,
    check_options,
    installed,
    option_ranges,
    require_installed,
)
from voicedrop.pipeline.engines.common import (
    load_failed,
    loadable,
    model_path,
    module_device,
    quiet_stdout,
)
from voicedrop.pipeline.modelspec import ModelSpec, Placement

BACKBONES = ("DiT", "UNetT", "MMDiT")
CROSS_FADE_S = 0.15  # infer_batch_process's default cross_fade_duration


class F5Settings(EngineConfig):
    """`[engines.f5tts]`."""

    checkpoint: Path | None = Field(None, description="model_*.safetensors (or .pt)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    arch: str | dict[str, Any] = Field(
        "F5TTS_v1_Base", description="a config f5-tts ships, or the DiT settings themselves"
    )
    vocab: Path | None = Field(None, description="default: the vocab.txt f5-tts ships")
    vocoder_dir: Path | None = Field(None, description="Vocos: config.yaml + pytorch_model.bin")
    asr_dir: Path | None = Field(None, description="local Whisper (transformers layout)")
    nfe_step: int = Field(32, ge=4, le=128)
    cfg_strength: float = Field(2.0, ge=0, le=10)
    sway_sampling_coef: float = Field(-1.0, ge=-2, le=2)
    speed: float = Field(1.0, ge=0.3, le=3.0)
    seed: int | None = Field(None, ge=0, le=2**31)
    working_gb: float = Field(1.0, ge=0)


OPTIONS = option_ranges(F5Settings, "speed", "nfe_step", "seed")  # what a job may set


class F5Engine:
    name: ClassVar[str] = "f5tts"
    extra: ClassVar[str | None] = "f5"
    requires: ClassVar[tuple[str, ...]] = ("f5_tts", "vocos", "torch")
    Config: ClassVar[type[EngineConfig]] = F5Settings
    seeds: ClassVar[bool] = True  # a `seed` option: qc retakes use new ones

    def __init__(self, config: F5Settings, context: EngineContext) -> None:
        self.config = config
        self.context = context
        key = "engines.f5tts"
        self.checkpoint = model_path(context, f"{key}.checkpoint", config.checkpoint)
        self.vocab = model_path(context, f"{key}.vocab", config.vocab)
        self.vocoder_dir = model_path(context, f"{key}.vocoder_dir", config.vocoder_dir)
        self.asr_dir = model_path(context, f"{key}.asr_dir", config.asr_dir)
        self._hashes = HashCheck()
        if self.checkpoint is not None and self.vocoder_dir is None:
            raise context.invalid(
                f"{key}.vocoder_dir", None, "F5-TTS needs a local Vocos vocoder directory"
            )
        for path, field in ((self.checkpoint, "checkpoint"), (self.vocab, "vocab")):
            if path is not None and not path.is_file():
                raise context.invalid(f"{key}.{field}", str(path), "no such file")
        if self.vocoder_dir is not None:
            try:
                require_files(self.vocoder_dir, ("config.yaml", "pytorch_model.bin"))
            except ModelFileError as exc:
                raise context.invalid(
                    f"{key}.vocoder_dir", str(self.vocoder_dir), str(exc)
                ) from None
        self.arch = self._arch(config.arch)

    def _arch(self, arch: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if isinstance(arch, dict):
            return "DiT", dict(arch)
        if not installed(F5Engine):
            return "DiT", {}  # checked when the engine is installed
        import yaml

        shipped = files("f5_tts").joinpath(f"configs/{arch}.yaml")
        if not shipped.is_file():
            raise self.context.invalid(
                "engines.f5tts.arch", arch, "not a config f5-tts ships (e.g. F5TTS_v1_Base)"
            )
        model = yaml.safe_load(shipped.read_text())["model"]
        return str(model["backbone"]), dict(model["arch"])

    def version(self) -> str:
        from importlib.metadata import version

        return f"f5-tts {version('f5-tts')}"

    # ---- checks ----------------------------------------------------------------------------

    def files(self) -> list[ModelFile]:
        key = "engines.f5tts"
        found = []
        if self.checkpoint is not None:
            found.append(ModelFile(f"{key}.checkpoint", self.checkpoint, self.config.sha256))
        if self.vocab is not None:
            found.append(ModelFile(f"{key}.vocab", self.vocab))
        if self.vocoder_dir is not None:
            for name in ("config.yaml", "pytorch_model.bin"):
                found.append(ModelFile(f"{key}.vocoder_dir", self.vocoder_dir / name))
        if self.asr_dir is not None:
            found.append(ModelFile(f"{key}.asr_dir", self.asr_dir))
        return found

    def check_voice(self, name: str, voice: Voice) -> None:
        key = f"voices.{name}"
        if len(voice.references) != 1:
            raise self.context.invalid(
                f"{key}.reference", voice.reference, "an f5tts voice is exactly one recording"
            )
        path = model_path(self.context, f"{key}.reference", voice.references[0])
        assert path is not None
        if not path.is_file():
            raise self.context.invalid(f"{key}.reference", str(voice.references[0]), "no such file")
        if not (voice.reference_text or "").strip() and self.asr_dir is None:
            raise self.context.invalid(
                f"{key}.reference_text",
                voice.reference_text,
                "F5-TTS needs what the recording says (or [engines.f5tts] asr_dir for a local ASR)",
            )

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        if self.checkpoint is None:
            raise EngineUnavailableError(
                "f5tts has no model: set [engines.f5tts] checkpoint and vocoder_dir",
                field="tts.engine",
            )
        if not voice.references:
            raise ManifestError(
                "f5tts needs a voice: a configured f5tts voice or a reference recording",
                field="tts.voice",
            )
        if not (voice.reference_text or "").strip() and self.asr_dir is None:
            raise ManifestError(
                "F5-TTS needs the text of the reference recording and no local ASR model is "
                "configured: give tts.reference_text",
                field="tts.reference_text",
            )
        check_options(spec.options, OPTIONS, "tts.options")

    # ---- models ----------------------------------------------------------------------------

    def models(self, request: TTSRequest) -> dict[str, ModelSpec]:
        assert self.checkpoint is not None and self.vocoder_dir is not None
        working = int(self.config.working_gb * GB)
        size = self.checkpoint.stat().st_size if self.checkpoint.exists() else 0
        vocoder = self.vocoder_dir / "pytorch_model.bin"
        specs = {
            "dit": ModelSpec(
                "f5tts",
                self._load_dit,
                expected_bytes=size + working,
                checkpoint=self.checkpoint,
                working_bytes=working,
            ),
            "vocoder": ModelSpec("vocos", self._load_vocoder, checkpoint=vocoder),
        }
        if not (request.voice.reference_text or "").strip():
            assert self.asr_dir is not None
            specs["asr"] = ModelSpec("asr", self._load_asr, checkpoint=self.asr_dir)
        return specs

    def _load_dit(self, placement: Placement) -> Any:
        require_installed(F5Engine)
        assert self.checkpoint is not None
        for path in (self.checkpoint, self.vocab):
            if path is not None:
                loadable(self.context, path)
        self._hashes.verify(self.checkpoint, self.config.sha256)
        backbone, arch = self.arch
        if backbone not in BACKBONES:
            raise ModelFileError(f"unknown F5-TTS backbone '{backbone}' (known: {BACKBONES})")
        import f5_tts.model

        from voicedrop.pipeline.engines.f5tts_load import load_dit

        vocab = str(self.vocab or files("f5_tts").joinpath("infer/examples/vocab.txt"))
        try:
            with quiet_stdout():
                return load_dit(
                    getattr(f5_tts.model, backbone), arch, self.checkpoint, vocab, placement
                )
        except Exception as exc:
            raise load_failed(self.checkpoint, exc) from exc

    def _load_vocoder(self, placement: Placement) -> Any:
        require_installed(F5Engine)
        assert self.vocoder_dir is not None
        loadable(self.context, self.vocoder_dir)
        from voicedrop.pipeline.engines.f5tts_load import load_vocos

        try:
            return load_vocos(self.vocoder_dir, placement.build_on)  # float32, as the library
        except Exception as exc:
            raise load_failed(self.vocoder_dir / "pytorch_model.bin", exc) from exc

    def _load_asr(self, placement: Placement) -> Any:
        assert self.asr_dir is not None
        require_files(self.asr_dir, ("config.json",))  # else a hub repository id
        loadable(self.context, self.asr_dir)
        from voicedrop.pipeline.engines.f5tts_load import AsrModel

        try:
            return AsrModel(self.asr_dir, placement)
        except Exception as exc:
            raise load_failed(self.asr_dir, exc) from exc

    # ---- speech ----------------------------------------------------------------------------

    def deterministic(self, request: TTSRequest) -> bool:
        seed = check_options(request.options, OPTIONS, "tts.options").get("seed", self.config.seed)
        return seed is not None  # flow matching starts from noise: seeded only

    def stream(
        self, models: Mapping[str, Any], text: str, request: TTSRequest, progress: Progress
    ) -> Iterator[Audio]:
        """A batch of sentences at a time, cross-faded into the next as the library's
        `infer_batch_process` joins its batches (the tail of each batch is held back until
        the next one is made)."""
        import torch
        from f5_tts.infer.utils_infer import chunk_text, infer_batch_process

        from voicedrop.pipeline.engines.f5tts_ref import batch_chars, prepare_audio, prepare_text

        voice = request.voice
        assert voice.reference is not None
        ref = prepare_audio(voice.reference)  # as preprocess_ref_audio_text: f5tts_ref.py
        ref_text = (voice.reference_text or "").strip()
        if not ref_text:
            progress("tts: transcribing the reference")
            ref_text = models["asr"].transcribe(Audio(ref.mono(), ref.rate), request.language)
            if not ref_text:
                raise ManifestError(
                    "the ASR model heard no words in the reference recording; "
                    "give its text as tts.reference_text",
                    field="tts.reference_text",
                )
        ref_text = prepare_text(ref_text)
        opts = {"speed": self.config.speed, "nfe_step": self.config.nfe_step}
        opts.update(check_options(request.options, OPTIONS, "tts.options"))
        seed = opts.pop("seed", self.config.seed)
        if seed is not None:
            torch.manual_seed(int(seed))
        batches = chunk_text(text, max_chars=batch_chars(ref, ref_text, float(opts["speed"])))
        if not batches:
            raise ManifestError("nothing to say: the text is empty after splitting", field="text")
        audio = torch.from_numpy(ref.samples)  # at its own rate: the library resamples
        dit = models["dit"]
        fade = CrossFade()
        for i, batch in enumerate(batches, 1):
            progress(f"tts: f5tts batch {i}/{len(batches)}")
            with quiet_stdout():
                wave, rate, _ = next(
                    infer_batch_process(
                        (audio, ref.rate),
                        ref_text,
                        [batch],
                        dit,
                        models["vocoder"],
                        mel_spec_type="vocos",
                        progress=None,
                        nfe_step=int(opts["nfe_step"]),
                        cfg_strength=self.config.cfg_strength,
                        sway_sampling_coef=self.config.sway_sampling_coef,
                        speed=float(opts["speed"]),
                        device=module_device(dit),
                    )
                )
            ready = fade.add(np.asarray(wave, dtype=np.float32).reshape(-1), int(rate))
            if ready.size:
                yield Audio(ready, int(rate))
        tail = fade.tail()
        if tail.size:
            yield Audio(tail, fade.rate)


class CrossFade:
    """Batches joined as `infer_batch_process` joins them: each next batch fades in over
    the last CROSS_FADE_S of what came before (linear), so the tail of each batch is
    held back until the next arrives."""

    def __init__(self, seconds: float = CROSS_FADE_S) -> None:
        self.seconds = seconds
        self.rate = 24000
        self._held = np.zeros(0, np.float32)
        self._emitted = 0  # samples already given out

    def add(self, wave: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
        """Take the next batch; return what can be given out now."""
        self.rate = rate
        fade = int(self.seconds * rate)
        if self._emitted == 0 and not self._held.size:
            joined = wave
        else:
            n = min(fade, self._emitted + len(self._held), len(wave))
            n = min(n, len(self._held))
            if n <= 0:
                joined = np.concatenate([self._held, wave])
            else:
                blended = self._held[-n:] * np.linspace(1, 0, n) + wave[:n] * np.linspace(0, 1, n)
                joined = np.concatenate([self._held[:-n], blended, wave[n:]])
        keep = min(fade, len(joined))
        out, self._held = joined[: len(joined) - keep], joined[len(joined) - keep :]
        self._emitted += len(out)
        return np.asarray(out, dtype=np.float32)

    def tail(self) -> npt.NDArray[np.float32]:
        """What is left once the last batch is in."""
        out, self._held = self._held, np.zeros(0, np.float32)
        return np.asarray(out, dtype=np.float32)


class _Progress:
    """Stands in for the tqdm module the library reports batch progress to."""

    def __init__(self, report: Progress, total: int) -> None:
        self.report, self.total = report, total

    def tqdm(self, items: Iterable[Any]) -> Iterator[Any]:
        for i, item in enumerate(items, 1):
            yield item
            self.report(f"tts: f5tts batch {i}/{self.total}")
