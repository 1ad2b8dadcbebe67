"""The precision each engine library runs its models in, per card: the one place that says it.

A model must compute in the precision its library would choose on the same card, or its
audio and its memory differ from what the library's users know (float32 takes twice the
memory of float16), and two models of one job may disagree. The libraries decide by the
card, each its own way:

- F5-TTS's DiT and the Whisper transcriber (`f5_tts.infer.utils_infer`, `load_model` and
  `initialize_asr_pipeline`): float16 on a CUDA card of compute capability 7 or more,
  unless it is an AMD card behind ZLUDA (its name ends in "[ZLUDA]").
- RVC's voice, HuBERT and RMVPE (`infer_rvc_python` `Config.device_config`): float16 on
  every CUDA card except those whose name says GTX 10xx ("1060", "1070", "1080"), a 16
  series ("16" anywhere in the name, a V100 excepted) or "P40": those "excel in single
  precision". The library reads the name, so "RTX 4060 Ti 16GB" reads as a 16 series
  and "Quadro P4000" as a P40 too; its rule is followed as written.
- XTTS and the Vocos vocoder: float32 on every device (the libraries load them so; XTTS's
  `fp16` option autocasts at inference instead).

On the CPU every model is float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Rule = Literal["f5tts", "whisper", "rvc"]


@dataclass(frozen=True)
class Card:
    """What the libraries look at to choose a precision: the card's name and capability."""

    name: str
    capability: tuple[int, int]


def half(card: Card | None, rule: Rule) -> bool:
    """Whether a model under `rule` runs in float16 on `card` (None: not a CUDA card)."""
    if card is None:
        return False
    if rule == "rvc":
        name = card.name
        sixteen = "16" in name and "V100" not in name.upper()
        single = (
            sixteen or "P40" in name.upper() or any(n in name for n in ("1060", "1070", "1080"))
        )
        return not single
    return card.capability[0] >= 7 and not card.name.endswith("[ZLUDA]")
