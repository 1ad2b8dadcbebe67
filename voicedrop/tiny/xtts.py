"""A tiny XTTS v2 in the published layout: config.json, model.pth, vocab.json, speakers_xtts.pth.

The published `model.pth` (coqui/XTTS-v2) was saved by coqui's trainer with torch's old
hook-based weight norm: its HiFiGAN weights are `weight_g`/`weight_v` (today's library
builds parametrizations, `parametrizations.weight.original0/1`, and torch maps the old
names at load), and its `config` is the pickled `XttsConfig` object, whose `XttsArgs`
and `XttsAudioConfig` lived in `TTS.tts.models.xtts` then (the library's
`_legacy_safe_globals` allow-lists exactly those for a weights-only load). `layout =
"resaved"` writes what the library's own fallback re-saves such a file as (a config
dict, today's key names); `layout = "current"` what `torch.save` of a loaded checkpoint
writes with today's library, as fine-tuning tools do (the config object, its classes
pickled under `TTS.tts.configs.xtts_config`, today's key names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Layout = Literal["published", "resaved", "current"]

SPEAKER = "Tiny Speaker"
LANGUAGES = ["en", "pt"]
ALPHABET = "abcdefghijklmnopqrstuvwxyzáàâãéêíóôõúç.,!?'-0123456789"
# coqui/XTTS-v2's config.json `model_args` where they differ from the library's defaults
# (8,194 audio tokens and no conditioning perceiver): the published architecture
TEXT_TOKENS = 6681
PUBLISHED: dict[str, int | bool] = {
    "gpt_number_text_tokens": TEXT_TOKENS,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_use_perceiver_resampler": True,
}


def build_xtts(
    directory: Path,
    reference: Path,
    seed: int = 0,
    *,
    full: bool = False,
    layout: Layout = "published",
) -> Path:
    """The published architecture (`PUBLISHED`, a 6,681-token vocabulary); tiny: only the
    GPT's depth and widths shrunk and its audio length bounded, `full`: exactly the
    published shape (466.9 M parameters), for GPU benchmarks."""
    import torch
    from tokenizers import Tokenizer, models, trainers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from voicedrop.pipeline.engines.common import quiet_stdout
    from voicedrop.pipeline.engines.xtts_load import compute_latents

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    special = ["[STOP]", "[UNK]", "[SPACE]", "[START]", *(f"[{lang}]" for lang in LANGUAGES)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))  # noqa: S106 (a token, not a secret)
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=special, initial_alphabet=list(ALPHABET)
    )
    tokenizer.train_from_iterator(["hello world, this is a tiny model", "olá, mundo"], trainer)
    last = max(tokenizer.get_vocab().values())
    # padded to the published vocabulary's size: the text embedding's rows
    tokenizer.add_tokens([f"[unused{i}]" for i in range(TEXT_TOKENS - 1 - last)])
    tokenizer.save(str(directory / "vocab.json"))
    config = XttsConfig()
    args = config.model_args
    for name, value in PUBLISHED.items():
        setattr(args, name, value)
    if not full:  # widths shrunk; a length bound, since random weights never say stop
        args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = 2, 64, 2
        args.decoder_input_dim = 64
        args.gpt_max_audio_tokens = 40
    args.tokenizer_file = "vocab.json"
    config.languages = LANGUAGES
    config.save_json(str(directory / "config.json"))
    with quiet_stdout():
        model = Xtts(config)
        model.tokenizer = VoiceBpeTokenizer(str(directory / "vocab.json"))
        model.init_models()
    save_checkpoint(directory / "model.pth", config, model.state_dict(), layout)
    model.eval()
    cond, speaker = compute_latents(model, (reference,))
    torch.save(
        {SPEAKER: {"gpt_cond_latent": cond, "speaker_embedding": speaker}},
        directory / "speakers_xtts.pth",
    )
    return directory


def save_checkpoint(path: Path, config: Any, state: dict[str, Any], layout: Layout) -> None:
    """model.pth as published (pickled config objects, old weight-norm names), as the
    library's fallback re-saves it, or as today's library pickles it."""
    import torch
    from TTS.tts.models.xtts import _legacy_safe_globals

    if layout == "resaved":
        torch.save({"config": config.to_dict(), "model": state}, path)
        return
    if layout == "current":
        torch.save({"config": config, "model": state}, path)
        return
    old = {_legacy_weight_norm(k): v for k, v in state.items()}
    with _legacy_safe_globals():  # the config classes pickled under their old module
        torch.save({"config": config, "model": old}, path)


def _legacy_weight_norm(key: str) -> str:
    """`x.parametrizations.weight.original0` → `x.weight_g` (and original1 → weight_v)."""
    for new, legacy in ((".parametrizations.weight.original0", ".weight_g"),
                        (".parametrizations.weight.original1", ".weight_v")):  # fmt: skip
        if key.endswith(new):
            return key[: -len(new)] + legacy
    return key
