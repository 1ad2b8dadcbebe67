"""Each engine's own library call on the models voicedrop has resident: the baseline of
benchmarks/engines.py's overhead ratio. Inputs are prepared outside the timed call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from voicedrop.config import Settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, synthesize
from voicedrop.pipeline.engines.common import module_device
from voicedrop.pipeline.plan import resolve_voice
from voicedrop.pipeline.runner import JobRunner


def _request(manifest: Manifest, settings: Settings) -> TTSRequest:
    voice = resolve_voice(manifest, settings, None)
    return TTSRequest("library", voice, manifest.tts.language, {})


def xtts(runner: JobRunner, settings: Settings, manifest: Manifest, text: str) -> float:
    from voicedrop.pipeline.engines.xtts_load import compute_latents

    engine: Any = runner.engines.tts["xtts"]
    request = _request(manifest, settings)
    with runner.manager.acquire_all(engine.models(request)) as models:
        model = models["model"]
        cond, speaker = compute_latents(model, request.voice.references)
        opts = engine._options(request)
        seed = opts.pop("seed", None)
        torch.manual_seed(int(seed) + 1 if seed is not None else 1)  # as the engine seeds chunk 1
        started = time.perf_counter()
        model.inference(text, "en", cond, speaker, **opts)
        return time.perf_counter() - started


def f5tts(runner: JobRunner, settings: Settings, manifest: Manifest, text: str) -> float:
    from f5_tts.infer.utils_infer import chunk_text, infer_batch_process

    from voicedrop.pipeline.engines.f5tts_ref import batch_chars, prepare_audio, prepare_text

    engine: Any = runner.engines.tts["f5tts"]
    request = _request(manifest, settings)
    with runner.manager.acquire_all(engine.models(request)) as models:
        voice = request.voice
        assert voice.reference is not None and voice.reference_text
        ref = prepare_audio(voice.reference)  # the library's own preprocess_ref_audio_text
        ref_text = prepare_text(voice.reference_text.strip())
        batches = chunk_text(text, max_chars=batch_chars(ref, ref_text, engine.config.speed))
        audio = torch.from_numpy(ref.samples)
        torch.manual_seed(1)
        started = time.perf_counter()
        next(
            infer_batch_process(
                (audio, ref.rate),
                ref_text,
                batches,
                models["dit"],
                models["vocoder"],
                mel_spec_type="vocos",
                progress=None,
                nfe_step=engine.config.nfe_step,
                cfg_strength=engine.config.cfg_strength,
                sway_sampling_coef=engine.config.sway_sampling_coef,
                speed=engine.config.speed,
                device=module_device(models["dit"]),
            )
        )
        return time.perf_counter() - started


def rvc(runner: JobRunner, settings: Settings, manifest: Manifest, text: str) -> float:
    from infer_rvc_python.main import BaseLoader
    from infer_rvc_python.root_pipe import VC

    from voicedrop.pipeline.engines.rvc_infer import _VcConfig

    espeak: Any = runner.engines.tts["espeak"]
    tts_request = _request(manifest, settings)
    with runner.manager.acquire_all(espeak.models(tts_request)) as models:
        audio = synthesize(espeak, models, text, tts_request, lambda _m: None)
    assert manifest.convert is not None
    conv = manifest.convert
    request = ConvertRequest("library", conv.model, settings.models[conv.model], conv)
    engine: Any = runner.engines.convert["rvc"]
    with runner.manager.acquire_all(engine.models(request)) as models:
        voice = models["voice"]
        half = next(voice.net_g.parameters()).dtype == torch.float16
        pipe = VC(voice.tgt_sr, _VcConfig(half, str(module_device(voice.net_g))))
        pipe.model_rmvpe = models["rmvpe"].bound()
        loader = BaseLoader.__new__(BaseLoader)  # only its inference method, with our models
        loader.hu_bert_model = models["hubert"]
        params = {
            "pitch_algo": conv.method,
            "pitch_lvl": 0,
            "respiration_median_filtering": 3,
            "resample_sr": 0,
            "envelope_ratio": 0.25,
            "consonant_breath_protection": 0.33,
        }
        index_rate = engine.config.index_rate if voice.index is not None else 0
        started = time.perf_counter()
        loader.infer(
            "library", params, 1, voice.tgt_sr, voice.net_g, pipe, None, voice.version,
            voice.if_f0, index_rate, voice.index, voice.big_npy, None,
            (audio.samples, audio.sample_rate), False, "array",
        )  # fmt: skip
        return time.perf_counter() - started


CALLS: dict[str, Callable[[JobRunner, Settings, Manifest, str], float]] = {
    "xtts": xtts,
    "f5tts": f5tts,
    "rvc": rvc,
}
