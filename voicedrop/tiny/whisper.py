"""A tiny Whisper in the transformers layout, for F5-TTS's optional local ASR (`asr_dir`).

Byte-level vocabulary plus Whisper's special tokens, a one-layer encoder and decoder,
and a generation config with the language and task tables Whisper's generate needs.
End-of-text is suppressed so that its random transcript is never empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL = [
    "<|startoftranscript|>", "<|en|>", "<|pt|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
]  # fmt: skip


def build_whisper(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        unk_token=end,
        bos_token=end,
        eos_token=end,
        pad_token=end,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    tokenizer.save_pretrained(str(directory))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [end, *SPECIAL]}
    common: dict[str, Any] = {
        "pad_token_id": ids[end],
        "bos_token_id": ids[end],
        "eos_token_id": ids[end],
        "decoder_start_token_id": ids["<|startoftranscript|>"],
    }
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=64,
        **common,
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        **common,
        max_length=24,
        is_multilingual=True,
        lang_to_id={t: ids[t] for t in ("<|en|>", "<|pt|>")},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=[ids[end]],
        begin_suppress_tokens=[],
    )
    model.save_pretrained(str(directory))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(directory))
    return directory
