"""Loading XTTS and computing its conditioning latents: imported (with the library and
torch) only when the model is loaded or a voice's latents are computed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicedrop.errors import ModelFileError
from voicedrop.modelfiles import load_weights
from voicedrop.pipeline.engines.common import quiet_stdout, read_reference

COND_RATE = 22050


def load_model(model_dir: Path, device: str | None = None) -> Any:
    """XTTS through the library's own classes and `load_checkpoint`, built without random
    initialisation: parameters are created on the meta device and the checkpoint's
    (memory-mapped) tensors are assigned to them, straight onto `device` when given.
    The checkpoint is read weights-only and never rewritten (the library's fallback for
    old checkpoints saves the converted file back in place: we read it without that)."""
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    from voicedrop.pipeline.engines.weights import assign, empty_parameters, empty_tensors

    config = XttsConfig()
    config.load_json(str(model_dir / "config.json"))
    checkpoint = model_dir / "model.pth"
    with quiet_stdout():
        with empty_parameters():
            model = Xtts(config)
        build = model.init_models  # load_checkpoint builds the modules again: empty, too

        def init_models() -> None:
            with empty_parameters():
                build()

        # instance overrides: built empty; read weights-only, never rewritten; by assignment
        model.init_models = init_models
        model._load_checkpoint = _read_checkpoint
        model.load_state_dict = lambda state, strict=True: assign(
            model, state, source=checkpoint, device=device, strict=strict
        )
        model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True, use_deepspeed=False)
    del model.init_models, model._load_checkpoint, model.load_state_dict
    left = empty_tensors(model)  # built after the load (none in coqui-tts 0.28): never silent
    if left:
        raise ModelFileError(f"{checkpoint}: no weights for {', '.join(left[:5])}")
    return model if device is None else model.to(device)


def _read_checkpoint(path: Path) -> Any:
    """Weights-only and memory-mapped, the published layout included: coqui/XTTS-v2's
    model.pth pickles its config objects, which the library's own allow-list admits under
    the module they lived in then (`TTS.tts.models.xtts`). A file re-saved by today's
    library (fine-tuning tools do) names the same two classes by their module now,
    `TTS.tts.configs.xtts_config`: both spellings are admitted, nothing more."""
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig
    from TTS.tts.models.xtts import _legacy_safe_globals

    today = "TTS.tts.configs.xtts_config"
    spelled: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (XttsArgs, f"{today}.XttsArgs"),
        (XttsAudioConfig, f"{today}.XttsAudioConfig"),
    ]
    with _legacy_safe_globals(), torch.serialization.safe_globals(spelled):
        checkpoint = load_weights(Path(path))
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ModelFileError(f"{path}: not an XTTS checkpoint (no 'model' state dict)")
    return checkpoint["model"]


def compute_latents(model: Any, references: tuple[Path, ...]) -> tuple[Any, Any]:
    """The library's get_conditioning_latents, fed tensors read with soundfile."""
    import torch

    cfg = model.config
    audios, embeddings = [], []
    for ref in references:
        clip = read_reference(ref, COND_RATE, cfg.max_ref_len)
        audio = torch.from_numpy(clip.samples).unsqueeze(0).to(model.device)
        embeddings.append(model.get_speaker_embedding(audio, COND_RATE))
        audios.append(audio)
    cond = model.get_gpt_cond_latents(
        torch.cat(audios, dim=-1),
        COND_RATE,
        length=cfg.gpt_cond_len,
        chunk_length=cfg.gpt_cond_chunk_len,
    )
    return cond, torch.stack(embeddings).mean(dim=0)
