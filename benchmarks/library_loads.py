"""Each model as its library's own loader builds it: the reference that voicedrop's loaders
must equal bit for bit (tests/engine/test_cold_load.py) and the baseline of
benchmarks/cold_load.py. Model files are the tiny (or real-size) ones voicedrop.tiny builds.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any


def xtts(model_dir: Path, device: str = "cpu") -> Any:
    """Xtts.init_from_config + load_checkpoint, as coqui-tts's own examples load it.

    Give it a copy of a published model.pth: the library's fallback for that layout saves
    the converted checkpoint back in place (voicedrop's loader never writes it)."""
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    config.load_json(str(model_dir / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True)
    return model.to(device)


def f5_dit(checkpoint: Path, arch: dict[str, Any], device: str = "cpu") -> Any:
    import f5_tts.model
    from f5_tts.infer.utils_infer import load_model

    vocab = str(files("f5_tts").joinpath("infer/examples/vocab.txt"))
    return load_model(
        f5_tts.model.DiT, arch, str(checkpoint), "vocos", vocab_file=vocab, device=device
    )


def vocos(directory: Path, device: str = "cpu") -> Any:
    from f5_tts.infer.utils_infer import load_vocoder

    return load_vocoder("vocos", is_local=True, local_path=str(directory), device=device)


def rvc_voice(path: Path, half: bool = False, device: str = "cpu") -> Any:
    """infer_rvc_python.main.load_trained_model: (n_spk, tgt_sr, net_g, vc, cpt, version)."""
    from infer_rvc_python.main import load_trained_model

    from voicedrop.pipeline.engines.rvc_infer import _VcConfig

    return load_trained_model(str(path), _VcConfig(half, device))[2]


def rmvpe(path: Path, half: bool = False, device: str = "cpu") -> Any:
    from infer_rvc_python.lib.rmvpe import RMVPE

    return RMVPE(str(path), half, device).model


def hubert(directory: Path, device: str = "cpu") -> Any:
    from infer_rvc_python.main import FairseqHubertWrapper

    return FairseqHubertWrapper(str(directory)).to(device)


LOADERS: dict[str, Callable[..., Any]] = {
    "xtts": xtts,
    "f5tts": f5_dit,
    "vocos": vocos,
    "rvc": rvc_voice,
    "rmvpe": rmvpe,
    "hubert": hubert,
}
