"""Loading F5-TTS's models: imported (with torch) only when one is loaded.

The DiT and the Vocos vocoder are built with the libraries' own classes and the arguments
`f5_tts.infer.utils_infer.load_model` and `load_vocoder` use, but without random
initialisation, and the checkpoint's memory-mapped tensors are assigned to them
(`weights.assign`): the result is the library's model, bit for bit, without building it
twice or copying the checkpoint. The ASR model (Whisper) keeps transformers' own loader,
which already builds on the meta device and maps safetensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from voicedrop.errors import ModelFileError
from voicedrop.modelfiles import load_weights
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines.weights import assign, empty_parameters
from voicedrop.pipeline.modelspec import Placement

# what utils_infer.load_checkpoint drops from an EMA checkpoint (f5-tts 1.1.22)
EMA_SKIP = ("initted", "step")
STALE_BUFFERS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")


def dit_dtype(placement: Placement) -> torch.dtype:
    """The precision utils_infer.load_checkpoint picks for the vocos mel type
    (voicedrop.pipeline.precision) — for the card the model will run on, not the device it
    is built on."""
    return torch.float16 if placement.half("f5tts") else torch.float32


def load_dit(
    backbone: type, arch: dict[str, Any], checkpoint: Path, vocab: str, placement: Placement
) -> Any:
    """utils_infer.load_model(backbone, arch, checkpoint, mel_spec_type="vocos", vocab_file=vocab,
    use_ema=True, device=...), built empty and loaded by assignment."""
    from f5_tts.infer import utils_infer as u
    from f5_tts.model import CFM

    vocab_char_map, vocab_size = u.get_tokenizer(vocab, "custom")
    with empty_parameters():
        model = CFM(
            transformer=backbone(**arch, text_num_embeds=vocab_size, mel_dim=u.n_mel_channels),
            mel_spec_kwargs=dict(
                n_fft=u.n_fft,
                hop_length=u.hop_length,
                win_length=u.win_length,
                n_mel_channels=u.n_mel_channels,
                target_sample_rate=u.target_sample_rate,
                mel_spec_type="vocos",
            ),
            odeint_kwargs=dict(method=u.ode_method),
            vocab_char_map=vocab_char_map,
        )
    raw = load_weights(checkpoint)
    ema = raw if checkpoint.suffix == ".safetensors" else raw.get("ema_model_state_dict")
    if not isinstance(ema, dict):
        raise ModelFileError(f"{checkpoint}: not an F5-TTS checkpoint (no EMA weights)")
    state = {k.replace("ema_model.", ""): v for k, v in ema.items() if k not in EMA_SKIP}
    for key in STALE_BUFFERS:  # the library's patch for older checkpoints
        state.pop(key, None)
    assign(model, state, source=checkpoint, device=placement.build_on, dtype=dit_dtype(placement))
    return model


def load_vocos(directory: Path, device: str) -> Any:
    """utils_infer.load_vocoder("vocos", is_local=True, local_path=directory), built empty
    and loaded by assignment. Only vocos' own classes are built (config checked first)."""
    from vocos import Vocos

    config_path = directory / "config.yaml"
    config = check_vocos_config(config_path)
    weights = directory / "pytorch_model.bin"
    if "Encodec" in str(config["feature_extractor"]["class_path"]):
        raise ModelFileError(
            f"{config_path}: an EnCodec-feature Vocos is not an F5-TTS vocoder (it needs mels)"
        )
    with empty_parameters():
        vocoder = Vocos.from_hparams(str(config_path))
    assign(vocoder, load_weights(weights), source=weights)
    return vocoder.eval().to(device)


def check_vocos_config(path: Path) -> dict[str, Any]:
    """Vocos builds whatever classes its config.yaml names: allow only vocos' own."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelFileError(f"{path}: unreadable vocoder config: {exc}") from None
    for part in ("feature_extractor", "backbone", "head"):
        target = str(((config or {}).get(part) or {}).get("class_path", ""))
        if not target.startswith("vocos."):
            raise ModelFileError(f"{path}: {part}.class_path '{target}' is not a vocos class")
    return dict(config)


class AsrModel:
    """A local Whisper pipeline (transformers) as a model the residency manager can move."""

    def __init__(self, directory: Path, placement: Placement) -> None:
        from transformers import pipeline

        dtype = torch.float16 if placement.half("whisper") else torch.float32  # as f5_tts's
        self.pipe = pipeline(
            "automatic-speech-recognition", model=str(directory), device=placement.build_on,
            dtype=dtype,
        )  # fmt: skip

    def tensors(self) -> Iterator[Any]:
        yield from self.pipe.model.parameters()
        yield from self.pipe.model.buffers()

    def to(self, device: Any) -> AsrModel:
        self.pipe.model.to(device)
        self.pipe.device = torch.device(device)
        return self

    def transcribe(self, audio: Audio, language: str) -> str:
        data = {"raw": audio.samples, "sampling_rate": audio.sample_rate}
        kwargs = {"language": language.split("-")[0], "task": "transcribe"}
        result: Any = self.pipe(data, generate_kwargs=kwargs, return_timestamps=False)
        return str(result["text"]).strip()
