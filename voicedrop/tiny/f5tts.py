"""A tiny F5-TTS and a tiny Vocos vocoder, in the layouts SWivid/F5-TTS publishes.

F5TTS_v1_Base ships `model_1250000.safetensors`: the EMA model's state dict, every key
prefixed `ema_model.`. The older `.pt` checkpoints hold it under `ema_model_state_dict`
beside ema_pytorch's `initted` and `step` (which utils_infer.load_checkpoint drops).
`vocab.txt` is the character vocabulary (the library ships the same file). The Vocos
vocoder is charactr/vocos-mel-24khz's `config.yaml` + `pytorch_model.bin`.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml

Layout = Literal["safetensors", "pt"]

ARCH: dict[str, Any] = {
    "dim": 64,
    "depth": 2,
    "heads": 2,
    "dim_head": 32,
    "ff_mult": 2,
    "text_dim": 32,
    "text_mask_padding": True,
    "conv_layers": 1,
}
VOCOS: dict[str, Any] = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def build_f5tts(
    directory: Path, seed: int = 0, *, full: bool = False, layout: Layout = "safetensors"
) -> tuple[Path, Path]:
    """Return (checkpoint, vocoder directory); `full`: F5TTS_v1_Base and the published Vocos."""
    import torch
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from safetensors.torch import save_file
    from vocos import Vocos

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = str(files("f5_tts").joinpath("infer/examples/vocab.txt"))
    char_map, size = get_tokenizer(vocab, "custom")
    mel = {
        "n_fft": 1024,
        "hop_length": 256,
        "win_length": 1024,
        "n_mel_channels": 100,
        "target_sample_rate": 24000,
        "mel_spec_type": "vocos",
    }
    arch = ARCH
    vocos_config = VOCOS
    if full:
        arch = yaml.safe_load(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml").read_text())
        arch = {k: v for k, v in arch["model"]["arch"].items() if v is not None}
        vocos_config = {
            **VOCOS,
            "backbone": {
                "class_path": "vocos.models.VocosBackbone",
                "init_args": {
                    "input_channels": 100,
                    "dim": 512,
                    "intermediate_dim": 1536,
                    "num_layers": 8,
                },
            },
            "head": {
                "class_path": "vocos.heads.ISTFTHead",
                "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "center"},
            },
        }
    cfm = CFM(
        transformer=DiT(**arch, text_num_embeds=size, mel_dim=100),
        mel_spec_kwargs=mel,
        vocab_char_map=char_map,
    )
    state = {f"ema_model.{k}": v.contiguous() for k, v in cfm.state_dict().items()}
    shutil.copyfile(vocab, directory / "vocab.txt")
    if layout == "pt":
        checkpoint = directory / "model.pt"
        ema = {**state, "initted": torch.tensor(True), "step": torch.tensor(1250000)}
        torch.save({"ema_model_state_dict": ema, "step": 1250000}, checkpoint)
    else:
        checkpoint = directory / "model.safetensors"
        save_file(state, str(checkpoint))
    vocoder = directory / "vocos"
    vocoder.mkdir(exist_ok=True)
    (vocoder / "config.yaml").write_text(yaml.safe_dump(vocos_config))
    torch.save(
        Vocos.from_hparams(str(vocoder / "config.yaml")).state_dict(), vocoder / "pytorch_model.bin"
    )
    return checkpoint, vocoder
