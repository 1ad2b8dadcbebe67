"""Coqui XTTS v2 (coqui-tts, import name `TTS`): cloning from recordings, or built-in speakers.

The model is one residency key (`xtts`), loaded from a local directory
(`config.json`, `model.pth`, `vocab.json`, optional `speakers_xtts.pth`)
through the library's own classes, built without random initialisation
(xtts_load.py, imported with torch only when a model loads). A voice's conditioning latents are
computed once and kept on disk in the state directory, keyed by the model
file and the reference audio's content, so later jobs skip the encoder.
Long text is split into sentences up to the tokenizer's per-language limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from voicedrop.config import GB, Voice
from voicedrop.errors import EngineUnavailableError, ManifestError, ModelFileError
from voicedrop.fsutil import StateWrites, write_atomic
from voicedrop.manifest import TTSSpec
from voicedrop.modelfiles import (
    HashCheck,
    ModelFile,
    load_weights,
    require_files,
)
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines.base import (
    EngineConfig,
    EngineContext,
    Progress,
    TTSRequest,
    VoiceChoice,
    check_options,
    option_ranges,
    require_installed,
)
from voicedrop.pipeline.engines.common import (
    drop_scratch,
    load_failed,
    loadable,
    model_path,
    quiet_stdout,
)
from voicedrop.pipeline.modelspec import ModelSpec, Placement
from voicedrop.pipeline.text import split_text

FILES = ("config.json", "model.pth", "vocab.json")


class XttsSettings(EngineConfig):
    """`[engines.xtts]`."""

    model_dir: Path | None = Field(None, description="config.json, model.pth, vocab.json")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="of model.pth")
    default_speaker: str | None = Field(None, description="built-in speaker for jobs without voice")
    fp16: bool = Field(False, description="CUDA only: float16 autocast for inference")
    temperature: float = Field(0.75, ge=0.05, le=2.0)
    top_p: float = Field(0.85, ge=0.05, le=1.0)
    top_k: int = Field(50, ge=1, le=500)
    repetition_penalty: float = Field(10.0, ge=1.0, le=50.0)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    seed: int | None = Field(
        None, ge=0, le=2**31, description="fixed seed: the same text gives the same audio"
    )
    working_gb: float = Field(0.8, ge=0, description="working memory estimate until measured")
    stream_tokens: int | None = Field(
        None,
        ge=4,
        le=400,
        description="stream within a sentence: audio every this many GPT tokens, through "
        "the library's inference_stream (first audio sooner; unset: a sentence at a time)",
    )


OPTIONS = option_ranges(  # what a job may set
    XttsSettings, "temperature", "top_p", "top_k", "repetition_penalty", "speed", "seed"
)


class XttsEngine:
    name: ClassVar[str] = "xtts"
    extra: ClassVar[str | None] = "xtts"
    requires: ClassVar[tuple[str, ...]] = ("TTS", "torch")
    Config: ClassVar[type[EngineConfig]] = XttsSettings
    seeds: ClassVar[bool] = True  # a `seed` option: qc retakes use new ones

    def __init__(self, config: XttsSettings, context: EngineContext) -> None:
        self.config = config
        self.context = context
        self.model_dir = model_path(context, "engines.xtts.model_dir", config.model_dir)
        self.latents_dir = context.state_dir / "xtts-latents"
        self._hashes = HashCheck()
        self._cache_writes = StateWrites("xtts latents cache")
        self._speakers: list[str] | None = None
        self.languages: list[str] = []
        if self.model_dir is not None:
            try:
                require_files(self.model_dir, FILES)
                cfg = json.loads((self.model_dir / "config.json").read_text())
                self.languages = [str(lang) for lang in cfg.get("languages", [])]
            except (ModelFileError, OSError, ValueError) as exc:
                raise context.invalid(
                    "engines.xtts.model_dir", str(config.model_dir), str(exc)
                ) from None

    def version(self) -> str:
        from importlib.metadata import version

        return f"coqui-tts {version('coqui-tts')}"

    # ---- checks ----------------------------------------------------------------------------

    def files(self) -> list[ModelFile]:
        if self.model_dir is None:
            return []
        key, d = "engines.xtts.model_dir", self.model_dir
        found = [
            ModelFile(key, d / name, self.config.sha256 if name == "model.pth" else None)
            for name in FILES
        ]
        speakers = d / "speakers_xtts.pth"
        return found + ([ModelFile(key, speakers)] if speakers.exists() else [])

    def speakers(self) -> list[str]:
        """Built-in speakers of `speakers_xtts.pth` (weights-only read), or none."""
        if self._speakers is None:
            path = self.model_dir / "speakers_xtts.pth" if self.model_dir else None
            self._speakers = sorted(load_weights(path)) if path and path.exists() else []
        return self._speakers

    def check_voice(self, name: str, voice: Voice) -> None:
        key = f"voices.{name}"
        if self.model_dir is None:
            raise self.context.invalid(
                f"{key}.engine", "xtts", "[engines.xtts] model_dir is not configured"
            )
        for i, ref in enumerate(voice.references):
            where = f"{key}.reference" + (f"[{i}]" if len(voice.references) > 1 else "")
            path = model_path(self.context, where, ref)
            assert path is not None
            if not path.is_file():
                raise self.context.invalid(where, str(ref), "no such file")
        if voice.engine_voice is not None and voice.engine_voice not in self.speakers():
            known = ", ".join(self.speakers()[:8]) or "none: the model has no speakers_xtts.pth"
            raise self.context.invalid(
                f"{key}.engine_voice",
                voice.engine_voice,
                f"not a built-in speaker (known: {known})",
            )
        if voice.engine_voice is None and not voice.references:
            raise self.context.invalid(
                key,
                voice.model_dump(mode="json"),
                "an xtts voice needs a reference or engine_voice",
            )

    def _language(self, language: str) -> str:
        base = language.lower().replace("_", "-").split("-")[0]
        return "zh-cn" if base == "zh" and "zh-cn" in self.languages else base

    def check(self, spec: TTSSpec, voice: VoiceChoice) -> None:
        if self.model_dir is None:
            raise EngineUnavailableError(
                "xtts has no model: set [engines.xtts] model_dir", field="tts.engine"
            )
        if self._language(spec.language) not in self.languages:
            raise ManifestError(
                f"xtts speaks {', '.join(self.languages)}; not '{spec.language}'",
                field="tts.language",
            )
        if not voice.references and not (voice.engine_voice or self.config.default_speaker):
            raise ManifestError(
                "xtts needs a voice: a reference recording, or a configured voice "
                "(or set [engines.xtts] default_speaker)",
                field="tts.voice",
            )
        check_options(spec.options, OPTIONS, "tts.options")

    # ---- models ----------------------------------------------------------------------------

    def models(self, request: TTSRequest) -> dict[str, ModelSpec]:
        assert self.model_dir is not None
        checkpoint = self.model_dir / "model.pth"
        working = int(self.config.working_gb * GB)
        size = checkpoint.stat().st_size if checkpoint.exists() else 0
        return {
            "model": ModelSpec(
                "xtts",
                self._load,
                expected_bytes=size + working,
                checkpoint=checkpoint,
                working_bytes=working,
            )
        }

    def _load(self, placement: Placement) -> Any:
        """float32 weights on every device, as the library loads them (`fp16` is
        autocast at inference)."""
        require_installed(XttsEngine)
        assert self.model_dir is not None
        loadable(self.context, self.model_dir)
        self._hashes.verify(self.model_dir / "model.pth", self.config.sha256)
        try:
            from voicedrop.pipeline.engines.xtts_load import load_model

            return load_model(self.model_dir, placement.build_on)
        except Exception as exc:
            raise load_failed(self.model_dir / "model.pth", exc) from exc

    # ---- speech ----------------------------------------------------------------------------

    def deterministic(self, request: TTSRequest) -> bool:
        return self._options(request).get("seed") is not None  # it samples: seeded only

    def stream(
        self, models: Mapping[str, Any], text: str, request: TTSRequest, progress: Progress
    ) -> Iterator[Audio]:
        import torch

        model = models["model"]
        lang = self._language(request.language)
        cond, speaker = self._conditioning(model, request.voice)
        opts = self._options(request)
        seed = opts.pop("seed", None)
        chunks = split_text(text, model.tokenizer.char_limits.get(lang.split("-")[0], 250))
        rate = int(model.config.model_args.output_sample_rate)
        autocast = self.config.fp16 and model.device.type == "cuda"
        try:
            for i, chunk in enumerate(chunks, 1):
                progress(f"tts: xtts sentence {i}/{len(chunks)}")
                if seed is not None:
                    torch.manual_seed(int(seed) + i)
                pieces = self._speak(model, chunk, lang, cond, speaker, opts)
                while True:  # the library runs inside the contexts; we yield outside them
                    with torch.autocast("cuda", torch.float16, enabled=autocast), quiet_stdout():
                        wav = next(pieces, None)
                    if wav is None:
                        break
                    yield Audio(np.asarray(wav, dtype=np.float32).reshape(-1), rate)
        finally:
            drop_scratch(model)  # the GPT's cached conditioning: it must not stay on a device

    def _speak(
        self, model: Any, text: str, lang: str, cond: Any, speaker: Any, opts: dict[str, Any]
    ) -> Iterator[Any]:
        """One sentence: whole (`inference`), or in pieces of `stream_tokens` GPT tokens
        (`inference_stream`, the library's own streaming)."""
        if self.config.stream_tokens is None:
            yield model.inference(text, lang, cond, speaker, **opts)["wav"]
            return
        for piece in model.inference_stream(
            text, lang, cond, speaker, stream_chunk_size=self.config.stream_tokens, **opts
        ):
            yield piece.detach().float().cpu().numpy()

    def _options(self, request: TTSRequest) -> dict[str, Any]:
        c = self.config
        opts: dict[str, Any] = {
            "temperature": c.temperature,
            "top_p": c.top_p,
            "top_k": c.top_k,
            "repetition_penalty": c.repetition_penalty,
            "speed": c.speed,
        }
        if c.seed is not None:
            opts["seed"] = c.seed
        opts.update(check_options(request.options, OPTIONS, "tts.options"))
        opts["top_k"] = int(opts["top_k"])
        return opts

    def _conditioning(self, model: Any, voice: VoiceChoice) -> tuple[Any, Any]:
        """GPT conditioning latents and speaker embedding: a built-in speaker's, or
        computed from the references once and then read from the on-disk cache."""
        if not voice.references:
            name = voice.engine_voice or self.config.default_speaker
            speakers = model.speaker_manager.speakers if model.speaker_manager else {}
            if name not in speakers:
                raise ManifestError(f"xtts has no built-in speaker '{name}'", field="tts.voice")
            entry = speakers[name]
            return entry["gpt_cond_latent"], entry["speaker_embedding"]
        cache = self.latents_dir / f"{self._latents_key(model, voice.references)}.safetensors"
        if cache.exists():
            tensors = load_weights(cache)
            return tensors["gpt_cond_latent"], tensors["speaker_embedding"]
        from voicedrop.pipeline.engines.xtts_load import compute_latents

        cond, speaker = compute_latents(model, voice.references)
        tensors = {"gpt_cond_latent": cond, "speaker_embedding": speaker}
        self._cache_writes.attempt(cache, lambda: _store(cache, tensors))  # a cache: optional
        return cond, speaker

    def _latents_key(self, model: Any, references: tuple[Path, ...]) -> str:
        assert self.model_dir is not None
        st = (self.model_dir / "model.pth").stat()
        cfg = model.config
        parts = [  # the checkpoint's version: a replaced one (cp -p, rsync -a) has a new ctime
            str(self.model_dir),
            str(st.st_size),
            str(st.st_mtime_ns),
            f"{st.st_ino}/{st.st_ctime_ns}",
            f"{cfg.gpt_cond_len}/{cfg.gpt_cond_chunk_len}/{cfg.max_ref_len}",
            *(self._hashes.digest(r) for r in references),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _store(path: Path, tensors: dict[str, Any]) -> None:
    """Cached latents, written aside and renamed into place (no temp file left on failure)."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_atomic(path, data, overwrite=True, durable=False, sole_writer=True)
